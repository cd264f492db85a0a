"""The air-gapped deployment checklist, judged from facts the daemon gathered.

Each check is ``pass``, ``fail`` or ``unknown`` (cannot tell from the daemon) with a line saying
what was seen and, when not ``pass``, what to do. Checks about the machine's network (default
route, outside addresses, DNS) are made by ``routerctl doctor`` itself, not here.

Invariants: pure; the checks come out in a fixed order; every non-pass check has a ``fix``.
"""

from __future__ import annotations

import ipaddress
import stat

import msgspec

from routerd_client.protocol import DoctorCheck

__all__ = ["DaemonFacts", "evaluate"]


class DaemonFacts(msgspec.Struct, kw_only=True):
    environment: str
    allow_external: bool
    networks: list[str]
    names: list[str]
    audit_enabled: bool
    audit_running: bool = False
    audit_path: str = ""
    audit_write_errors: int = 0
    audit_dropped: int = 0
    key_mode: int | None = None
    log_mode: int | None = None
    log_query_text: bool = False
    verify_checksums: bool = True
    checksum_checked: int = 0
    checksum_failed: list[str] = []
    checksum_busy: bool = False
    socket_path: str = ""
    socket_mode: int | None = None
    socket_uid: int | None = None
    daemon_uid: int = 0
    socket_group: str | None = None
    serena_enabled: bool = True
    serena_usage_reporting_off: bool = True
    access_control: bool = False


def _check(name: str, ok: bool | None, detail: str, fix: str = "") -> DoctorCheck:
    status = "unknown" if ok is None else ("pass" if ok else "fail")
    return DoctorCheck(name=name, status=status, detail=detail, fix="" if ok else fix)


def _allowlist(f: DaemonFacts) -> DoctorCheck:
    if f.allow_external:
        return _check(
            "allowlist is tight", False, "security.allow_external is true: any host may be reached",
            'set security.allow_external = false and environment = "air-gapped"',
        )  # fmt: skip
    wide = []
    for text in f.networks:
        net = ipaddress.ip_network(text, strict=False)
        if net.prefixlen == 0 or not (net.is_private or net.is_loopback or net.is_link_local):
            wide.append(text)
    if wide:
        return _check(
            "allowlist is tight", False, f"allowed networks include public addresses: {wide}",
            "remove them from security.allowed_cidrs / allowed_hosts",
        )  # fmt: skip
    shown = ", ".join([*f.networks, *f.names]) or "nothing"
    return _check("allowlist is tight", True, f"allowed: {shown}")


def _audit(f: DaemonFacts) -> list[DoctorCheck]:
    if not f.audit_enabled:
        return [
            _check(
                "audit is on", False, "security.audit_enabled is false",
                "set security.audit_enabled = true",
            )
        ]  # fmt: skip
    out = [
        _check(
            "audit is on", f.audit_running and not f.audit_write_errors,
            f"writing {f.audit_path}" + (
                f"; {f.audit_write_errors} write error(s)" if f.audit_write_errors else ""
            ) + (f"; {f.audit_dropped} record(s) dropped" if f.audit_dropped else ""),
            "check the daemon log for audit write errors (disk full? permissions?)",
        )
    ]  # fmt: skip
    private = [m for m in (f.key_mode, f.log_mode) if m is not None]
    out.append(
        _check(
            "audit files are private",
            None if not private else all(not (m & 0o077) for m in private),
            f"key mode {_mode(f.key_mode)}, log mode {_mode(f.log_mode)}",
            "chmod 600 the audit key and log files, and rotate the key if others could read it",
        )
    )
    out.append(
        _check(
            "queries are not logged in plaintext", not f.log_query_text,
            "only keyed hashes of queries are written" if not f.log_query_text
            else "security.log_query_text is true: queries are written as plaintext",
            "set security.log_query_text = false unless your policy requires the text",
        )
    )  # fmt: skip
    return out


def _mode(mode: int | None) -> str:
    return "?" if mode is None else f"{stat.S_IMODE(mode):04o}"


def _checksums(f: DaemonFacts) -> DoctorCheck:
    name = "model checksums verify"
    if not f.verify_checksums:
        return _check(
            name, False, "security.verify_checksums is false",
            "set security.verify_checksums = true and run routerctl verify",
        )  # fmt: skip
    if f.checksum_failed:
        return _check(
            name, False, f"{len(f.checksum_failed)} file(s) fail: {', '.join(f.checksum_failed[:3])}",
            "replace the files from a trusted copy, then run routerctl verify",
        )  # fmt: skip
    if f.checksum_busy or not f.checksum_checked:
        return _check(
            name, None,
            "still hashing" if f.checksum_busy else "no model file checked yet",
            "run routerctl verify; list GGUF files in security.model_checksums",
        )  # fmt: skip
    return _check(name, True, f"{f.checksum_checked} file(s) match")


def _socket(f: DaemonFacts) -> DoctorCheck:
    name = "socket mode and owner"
    if f.socket_mode is None:
        return _check(name, None, f"cannot stat {f.socket_path or 'the socket'}", "check the path")
    mode = stat.S_IMODE(f.socket_mode)
    want = 0o660 if f.socket_group else 0o600
    ok = mode & ~want == 0 and f.socket_uid == f.daemon_uid
    return _check(
        name, ok,
        f"{f.socket_path}: mode {mode:04o}, owner uid {f.socket_uid} (daemon uid {f.daemon_uid})",
        f"the socket should be {want:04o} and owned by the daemon's user; with systemd set "
        f"SocketMode={want:04o}",
    )  # fmt: skip


def evaluate(f: DaemonFacts) -> list[DoctorCheck]:
    """The daemon-side checklist, in order."""
    checks = [
        _check(
            "air-gapped environment", f.environment == "air-gapped",
            f"environment = {f.environment!r}", 'set environment = "air-gapped"',
        ),
        _allowlist(f),
        *_audit(f),
        _checksums(f),
        _socket(f),
        _check(
            "peers are checked", f.access_control,
            "every connection's uid/gid is checked against the allowed users and groups"
            if f.access_control else "peer admission is not installed",
            "install the security feature (routerd.shell.features)",
        ),
        _check(
            "Serena's usage reporting is off",
            True if not f.serena_enabled else f.serena_usage_reporting_off,
            "Serena is disabled" if not f.serena_enabled
            else "routerd starts Serena with SERENA_USAGE_REPORTING=false",
            "do not run Serena outside routerd; set SERENA_USAGE_REPORTING=false",
        ),
    ]  # fmt: skip
    return checks
