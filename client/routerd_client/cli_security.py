"""routerctl commands for the air-gap: ``audit tail|verify|verify-chain``, ``verify``, ``doctor``.

``audit verify-chain`` asks the daemon, which holds the audit key and never sends it: members
of the socket's group must not be able to forge lines, so they must not read the key. An
auditor who has been given the key and a copy of the log verifies offline with ``--key FILE
--log FILE`` (this needs the ``routerd`` package for the verifier, nothing else).

``audit verify TEXT`` sends TEXT to the daemon to be hashed with the key; pass ``-`` to read it
from stdin, which keeps it out of the shell history and the process list.

``doctor`` prints the deployment checklist: the daemon's side (allowlist, audit, checksums,
socket, Serena) plus this machine's network, checked here. The checks that send packets are
opt-in: ``--connect`` tries public addresses, ``--resolve`` asks DNS for public names.
Exit codes: ``audit verify`` 0 if the text is in the log, 1 if not; ``verify-chain``,
``verify`` and ``doctor`` 1 when something fails. This module imports neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ._sync import typed_result
from .cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, GROUPS, Context, command, print_json
from .errors import DaemonUnreachable, RemoteError
from .protocol import (
    AuditChainResult,
    AuditVerifyResult,
    DoctorCheck,
    DoctorResult,
    VerifyResult,
)

__all__ = ["cmd_audit_tail", "cmd_audit_verify", "cmd_audit_verify_chain", "cmd_verify",
           "cmd_doctor", "local_checks", "format_record", "format_checks"]  # fmt: skip

GROUPS["audit"] = "read and verify the tamper-evident audit log"

#: Public addresses ``doctor --connect`` tries to reach (anycast DNS resolvers).
PROBE_ADDRESSES = (("1.1.1.1", 443), ("8.8.8.8", 53), ("2606:4700:4700::1111", 443))
#: Public names ``doctor --resolve`` tries to resolve.
PROBE_NAMES = ("example.com", "example.org")
PROBE_TIMEOUT = 2.0


# --- audit ------------------------------------------------------------------------------------


def format_record(line: str) -> str:
    """One audit line as a short human line (the line itself if it is not JSON)."""
    try:
        r = json.loads(line)
    except ValueError:
        return line
    parts = [str(r.get("timestamp", "?")), f"#{r.get('seq', '?')}", str(r.get("event_type"))]
    for key in ("session_id", "model", "service", "uid", "pid", "agent", "fallback_level"):
        if r.get(key) is not None:
            parts.append(f"{key}={r[key]}")
    if r.get("event_type") == "query":
        parts.append(f"tokens={r.get('tokens_in', 0)}/{r.get('tokens_out', 0)}")
    if r.get("error"):
        parts.append(f"error={r['error']!r}")
    return " ".join(parts)


def _tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="show the last N lines (default 10)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="then print new lines as written")


@command(
    "audit tail",
    help="show the last audit lines (--follow: and new ones)",
    arguments=_tail_arguments,
)
def cmd_audit_tail(ctx: Context, args: argparse.Namespace) -> int:
    params = {"lines": max(0, args.lines), "follow": args.follow}
    try:
        with (
            ctx.connect() as client,
            client.stream(
                "audit.tail", params, timeout=None if args.follow else ctx.timeout
            ) as events,
        ):
            for ev in events:
                line = ev.data.get("line", "") if isinstance(ev.data, dict) else ""
                print(line if ctx.json else format_record(line), flush=True)
            end = events.end_data
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_OK
    if isinstance(end, dict) and end.get("lost"):
        print("routerctl: fell behind the audit log; some lines were not shown", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the exact text (query or response); '-' reads it from stdin")


@command(
    "audit verify",
    help="is this exact text in the audit log? (by its keyed hash)",
    arguments=_verify_arguments,
)
def cmd_audit_verify(ctx: Context, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.text == "-" and text.endswith("\n"):
        text = text[:-1]  # the newline that ends the input is not part of the text
    with ctx.connect() as client:
        raw = client.call("audit.verify", {"text": text})
    result = typed_result(raw, AuditVerifyResult, "audit.verify")
    if ctx.json:
        print_json(raw)
    elif not result.matches:
        print(f"not found: no logged query or response has this text's hash ({result.hash[:16]}…)")
    else:
        print(f"found {len(result.matches)} time(s):")
        for m in result.matches:
            who = ", ".join(
                f"{k}={v}"
                for k, v in (
                    ("session", m.session_id),
                    ("model", m.model),
                    ("uid", m.uid),
                    ("agent", m.agent),
                )
                if v
            )
            print(f"  {m.timestamp} #{m.seq} {m.field} in {m.file}:{m.line}  {who}".rstrip())
    return EXIT_OK if result.matches else EXIT_ERROR


def _chain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        metavar="FILE",
        help="verify offline with this key file (with --log), not through the daemon",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="the audit.log to verify offline; its rotated files are found beside it",
    )


@command(
    "audit verify-chain",
    help="check no audit line was edited, removed or reordered",
    arguments=_chain_arguments,
)
def cmd_audit_verify_chain(ctx: Context, args: argparse.Namespace) -> int:
    if (args.key is None) != (args.log is None):
        return ctx.fail("usage", "give both --key and --log to verify offline", EXIT_USAGE)
    if args.key is not None:
        try:
            result = verify_offline(Path(args.key), Path(args.log))
        except ImportError:
            return ctx.fail("usage", "offline verification needs the routerd package", EXIT_USAGE)
        except (OSError, ValueError) as exc:
            return ctx.fail("error", str(exc), EXIT_ERROR)
    else:
        with ctx.connect() as client:
            raw = client.call("audit.verify_chain", timeout=max(ctx.timeout, 600.0))
        result = typed_result(raw, AuditChainResult, "audit.verify_chain")
    if ctx.json:
        print_json(result)
    else:
        print(format_chain(result))
    return EXIT_OK if result.ok else EXIT_ERROR


def format_chain(r: AuditChainResult) -> str:
    span = f"seq {r.first_seq}..{r.last_seq}" if r.lines else "no lines"
    head = f"{'intact' if r.ok else 'BROKEN'}: {r.lines} line(s), {span} in {len(r.files)} file(s)"
    if r.lines and not r.anchored:
        head += " (starts after files removed by retention)"
    lines = [head]
    for p in r.problems:
        where = f"{p.file}:{p.line}" if p.file else "log"
        lines.append(f"  {where}: {p.problem}")
    return "\n".join(lines)


def verify_offline(key_file: Path, log: Path) -> AuditChainResult:
    """Verify ``log`` and its rotated files with the key in ``key_file``, here."""
    from routerd.core.audit import ChainVerifier, chain_result, derive_keys, parse_key
    from routerd.shell.audit_files import iter_lines, log_files

    files = log_files(log)
    if not files:
        raise OSError(f"no audit log at {log}")
    verifier = ChainVerifier(derive_keys(parse_key(key_file.read_bytes())))
    for path in files:
        with path.open("rb") as f:
            for lineno, line in iter_lines(f, os.fstat(f.fileno()).st_size):
                verifier.feed(path.name, lineno, line)
    return chain_result(verifier.finish(), [p.name for p in files])


# --- checksums --------------------------------------------------------------------------------


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help="only these models' files")


@command(
    "verify",
    help="hash local model files and compare them with their expected SHA-256",
    arguments=_models_arguments,
)
def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("verify", {"models": args.models}, timeout=None)
    result = typed_result(raw, VerifyResult, "verify")
    if ctx.json:
        print_json(raw)
        return EXIT_OK if result.ok else EXIT_ERROR
    if not result.files:
        print(
            "no model files known: list GGUF files in security.model_checksums, or check "
            "security.ollama_models"
        )
    for f in result.files:
        models = f" ({', '.join(f.models)})" if f.models else ""
        detail = f": {f.detail}" if f.detail else ""
        print(f"{f.status.upper():8} {f.path}{models}{detail}")
    if result.blocked_models:
        print(f"not routed to: {', '.join(result.blocked_models)}")
    return EXIT_OK if result.ok else EXIT_ERROR


# --- doctor -----------------------------------------------------------------------------------


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect",
        action="store_true",
        help="try to reach public addresses (sends packets) to test egress is blocked",
    )
    p.add_argument(
        "--resolve",
        action="store_true",
        help="ask DNS for public names (a DNS query) to test they do not resolve",
    )


def _default_routes(root: Path) -> list[str] | None:
    """Interfaces with a default route, from /proc/net/route and /proc/net/ipv6_route; None
    when neither can be read (no Linux /proc: Windows, macOS)."""
    found: list[str] = []
    read = False
    try:
        for line in (root / "route").read_text().splitlines()[1:]:
            f = line.split()
            if len(f) > 7 and f[1] == "00000000" and f[7] == "00000000":
                found.append(f[0])
        read = True
    except OSError:
        pass
    try:
        for line in (root / "ipv6_route").read_text().splitlines():
            f = line.split()
            if len(f) == 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
                found.append(f[9] + " (IPv6)")
        read = True
    except OSError:
        pass
    return sorted(set(found)) if read else None


def _reaches(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(PROBE_TIMEOUT)
            s.connect((host, port))
            return True
    except OSError:
        return False


def _resolves(name: str) -> bool:
    try:
        return bool(socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM))
    except OSError:
        return False


def local_checks(*, connect: bool, resolve: bool, proc: Path = Path("/proc")) -> list[DoctorCheck]:
    """This machine's side of the checklist (network), checked from routerctl."""
    name = "egress is blocked"
    if connect:
        reached = [f"{h}:{p}" for h, p in PROBE_ADDRESSES if _reaches(h, p)]
        egress = DoctorCheck(
            name, "fail" if reached else "pass",
            f"reached {', '.join(reached)}" if reached else "no public address answered",
            "block outbound traffic at the firewall" if reached else "",
        )  # fmt: skip
    else:
        routes = _default_routes(proc / "net")
        if routes == []:
            egress = DoctorCheck(name, "pass", "no default route")
        else:
            detail = (f"a default route exists via {', '.join(routes)}" if routes
                      else f"cannot read the routing table ({proc / 'net' / 'route'})")
            egress = DoctorCheck(
                name, "unknown", detail,
                "run `routerctl doctor --connect` to test, or make sure the firewall drops egress",
            )  # fmt: skip
    name = "external names do not resolve"
    if resolve:
        hits = [n for n in PROBE_NAMES if _resolves(n)]
        dns = DoctorCheck(
            name, "fail" if hits else "pass",
            f"resolved {', '.join(hits)}" if hits else "public names do not resolve",
            "point the resolver at internal DNS only" if hits else "",
        )  # fmt: skip
    else:
        dns = DoctorCheck(
            name, "unknown", "not checked: the check is itself a DNS query",
            "run `routerctl doctor --resolve` to check",
        )  # fmt: skip
    checks = [egress, dns]
    try:
        off = (proc / "sys/net/ipv6/conf/all/disable_ipv6").read_text().strip() == "1"
        checks.append(DoctorCheck(
            "IPv6 is off if not needed", "pass" if off else "unknown",
            "IPv6 is disabled" if off else "IPv6 is enabled",
            "" if off else "disable IPv6 (net.ipv6.conf.all.disable_ipv6=1) if you do not use it",
        ))  # fmt: skip
    except OSError:
        pass
    return checks


_MARK = {"pass": "PASS", "fail": "FAIL", "unknown": "?"}


def format_checks(checks: Sequence[DoctorCheck]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(
            f"{_MARK.get(c.status, c.status):4}  {c.name.ljust(width)}  {c.detail}".rstrip()
        )
        if c.fix and c.status != "pass":
            lines.append(f"{'':4}  {'':{width}}  -> {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "unknown")}
    lines.append(f"{counts['pass']} pass, {counts['fail']} fail, {counts['unknown']} cannot tell")
    return "\n".join(lines)


@command(
    "doctor",
    help="check this machine against the air-gapped deployment checklist",
    arguments=_doctor_arguments,
)
def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    checks: list[DoctorCheck] = []
    try:
        with ctx.connect() as client:
            checks += typed_result(client.call("doctor"), DoctorResult, "doctor").checks
    except (DaemonUnreachable, RemoteError) as exc:
        checks.append(DoctorCheck(
            "daemon checks", "unknown", f"cannot ask routerd: {exc}",
            "start routerd (or run as a user it admits) for the daemon's checks",
        ))  # fmt: skip
    checks += local_checks(connect=args.connect, resolve=args.resolve)
    if ctx.json:
        print_json({"checks": checks})
    else:
        print(format_checks(checks))
    return EXIT_ERROR if any(c.status == "fail" for c in checks) else EXIT_OK
