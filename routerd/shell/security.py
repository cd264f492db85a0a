"""The security feature: audit trail, peer admission, checksums, and their methods.

``install(app)`` sets ``app.audit`` (the :class:`~routerd.shell.audit.AuditLog`, or a
journal-only sink when ``security.audit_enabled`` is false) and ``app.access``, starts the
audit writer before READY and the checksum check after, and registers:

* ``audit.tail {lines, follow}`` (stream of ``line`` events), ``audit.verify {text}``,
  ``audit.verify_chain`` — privileged (the daemon's user and root, or a ``security.clients``
  grant). The daemon holds the audit key and never sends it: a socket-group member who could
  read the key could forge lines, so verification happens here (``routerctl audit
  verify-chain --key`` verifies a copied log offline instead).
* ``verify {models}``: hash model files now; ``doctor``: the daemon's side of the checklist.

For outbound HTTP, pass :func:`egress_reporter` as ``on_refused`` to ``make_http_client``: each
refusal becomes a ``security:refused_endpoint`` event.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from routerd.core.audit import chain_result, derive_keys
from routerd.core.doctor import DaemonFacts, evaluate
from routerd.core.egress import policy_from_config
from routerd.core.errors import Unavailable
from routerd.core.serena import serena_environment
from routerd_client.protocol import (
    AuditChainResult,
    AuditLine,
    AuditMatch,
    AuditTailParams,
    AuditVerifyParams,
    AuditVerifyResult,
    DoctorResult,
    EmptyParams,
    VerifyParams,
    VerifyResult,
)

from .access import AccessControl
from .app import App
from .audit import AuditLog, AuditSettings, JournalOnlyAudit, options_of
from .audit_files import load_or_create_key
from .checksums import Checksums
from .dispatch import RequestContext, Stream
from .osdeps import effective_uid
from .state_dir import ensure_private_dir, resolve_state_dir
from .transport import StartupError

__all__ = ["egress_reporter", "install"]

log = logging.getLogger(__name__)

#: Most lines ``audit.tail`` sends before following.
MAX_TAIL = 100_000


def egress_reporter(app: App) -> Callable[[str, str], None]:
    """An ``on_refused`` for ``make_http_client``: records ``security:refused_endpoint``."""

    def report(url: str, reason: str) -> None:
        app.audit.security("refused_endpoint", reason, url=url)

    return report


def _audit_log(app: App) -> AuditLog:
    audit = app.audit
    if not isinstance(audit, AuditLog) or not audit.running:
        raise Unavailable("the audit log is off (security.audit_enabled = false) or not started")
    return audit


# --- methods ----------------------------------------------------------------------------------


async def audit_tail(ctx: RequestContext, params: AuditTailParams, stream: Stream) -> Any:
    audit = _audit_log(ctx.app)
    sub = audit.subscribe() if params.follow else None  # before reading: no line falls between
    try:
        sent = 0
        lines, last = await audit.tail_upto(max(0, min(params.lines, MAX_TAIL)))
        for line in lines:
            await stream.emit("line", AuditLine(line.decode("utf-8", "replace").rstrip("\n")))
            sent += 1
        if sub is None:
            return {"lines": sent}
        async for line in sub.receive:
            # Lines up to the tail's snapshot reached the subscription too: skip them.
            if _seq_of(line) <= last:
                continue
            await stream.emit("line", AuditLine(line.decode("utf-8", "replace").rstrip("\n")))
            sent += 1
        return {"lines": sent, "lost": sub.lost}
    finally:
        if sub is not None:
            audit.unsubscribe(sub)


def _seq_of(line: bytes) -> int:
    # Lines start with {"seq":N,
    head = line[:32]
    try:
        return int(head[len(b'{"seq":') : head.index(b",")])
    except ValueError:
        return 0


async def audit_verify(ctx: RequestContext, params: AuditVerifyParams) -> AuditVerifyResult:
    digest, found = await _audit_log(ctx.app).find_text(params.text)
    return AuditVerifyResult(hash=digest, matches=[AuditMatch(**m) for m in found])


async def audit_verify_chain(ctx: RequestContext, params: EmptyParams) -> AuditChainResult:
    report, files = await _audit_log(ctx.app).verify_chain()
    if not report.ok:
        ctx.app.audit.security(
            "audit_chain_broken", report.problems[0].problem, problems=len(report.problems)
        )
    return chain_result(report, files)


async def verify(ctx: RequestContext, params: VerifyParams, *, sums: Checksums) -> VerifyResult:
    return await sums.run_check(params.models)


async def doctor(
    ctx: RequestContext, params: EmptyParams, *, sums: Checksums, access: AccessControl | None
) -> DoctorResult:
    facts = await trio.to_thread.run_sync(_facts, ctx.app, sums, access)
    return DoctorResult(checks=evaluate(facts))


def _mode_of(path: Path | str | None) -> tuple[int | None, int | None]:
    if not path or sys.platform == "win32":
        # Windows: mode bits say nothing about access (the ACL does), so the doctor says
        # "unknown"; and statting the pipe's name would connect to it.
        return None, None
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_mode, st.st_uid


def _facts(app: App, sums: Checksums, access: AccessControl | None) -> DaemonFacts:
    config = app.config
    s = config.security
    policy = policy_from_config(s)
    audit = app.audit
    running = isinstance(audit, AuditLog) and audit.running
    socket_mode, socket_uid = _mode_of(app.socket_path)
    env = serena_environment({}, home="/nonexistent", program="serena")
    facts = DaemonFacts(
        environment=config.environment,
        allow_external=s.allow_external,
        networks=[str(n) for n in policy.networks],
        names=sorted(policy.names),
        audit_enabled=s.audit_enabled,
        audit_running=running,
        log_query_text=s.log_query_text,
        verify_checksums=s.verify_checksums,
        checksum_checked=len(sums.results),
        checksum_failed=[r.path for r in sums.results if r.status != "ok"],
        checksum_busy=bool(sums.progress),
        socket_path=app.socket_path or "",
        socket_mode=socket_mode,
        socket_uid=socket_uid,
        daemon_uid=effective_uid(),  # osdeps.SELF_UID on Windows
        socket_group=config.daemon.socket_group,
        serena_enabled=config.serena.enabled,
        serena_usage_reporting_off=env.get("SERENA_USAGE_REPORTING") == "false",
        # None: Windows, where the pipe's security descriptor admits only the daemon's user.
        access_control=access is None or app.access is access,
    )
    if isinstance(audit, AuditLog):
        facts.audit_path = str(audit.settings.path)
        facts.audit_write_errors = audit.write_errors
        facts.audit_dropped = audit.dropped
        facts.key_mode = _mode_of(audit.settings.key_path)[0]
        facts.log_mode = _mode_of(audit.settings.path)[0]
    return facts


# --- installing -------------------------------------------------------------------------------


class _AuditService:
    """Loads (or creates) the key, then runs the writer: a service started before READY."""

    def __init__(self, app: App, audit: AuditLog) -> None:
        self._app = app
        self._audit = audit

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        settings = self._audit.settings
        try:
            secret, notes = await trio.to_thread.run_sync(_prepare, settings)
        except (OSError, ValueError) as exc:
            raise StartupError(
                f"cannot use the audit key {settings.key_path}: {exc} "
                "(fix it, or set security.audit_enabled = false)"
            ) from None
        self._audit.set_keys(derive_keys(secret))
        for note in notes:
            kind = "audit_key_created" if note.startswith("generated") else "audit_key_exposed"
            self._app.audit.security(kind, note, path=str(settings.key_path))
        await self._audit.run(task_status=task_status)

    def reload(self, old: Any, new: Any) -> None:
        self._audit.apply(options_of(new), new.security)


def _prepare(settings: AuditSettings) -> tuple[bytes, list[str]]:
    ensure_private_dir(settings.key_path.parent)
    settings.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return load_or_create_key(settings.key_path)


def install(app: App, *, state_dir: Path | None = None) -> None:
    """Plug the security feature into ``app`` (see the module docstring)."""
    config = app.config
    if state_dir is None:
        state_dir = resolve_state_dir(config.daemon.state_dir, app.env, uid=effective_uid())
    if config.security.audit_enabled:
        audit = AuditLog(AuditSettings.from_config(config, state_dir))
        app.audit = audit
        service = _AuditService(app, audit)
        app.add_service("audit", service.run)
        app.add_reload_hook(service.reload)
        app.add_component("audit", audit.status)
    else:
        app.audit = JournalOnlyAudit()
        app.add_component("audit", lambda: {"enabled": False, "state": "off"})
    access: AccessControl | None = None
    if sys.platform != "win32":
        # On Windows the named pipe's security descriptor admits only the daemon's own user,
        # who may call every method: there is no peer to check (docs/operations.md, Windows).
        access = AccessControl(app)
        app.access = access
        app.add_reload_hook(access.reload)
        app.add_component("access", access.status)
    sums = Checksums(app)
    app.add_service("checksums", sums.run, before_ready=False)
    app.add_component("checksums", sums.status)
    reg = app.registry
    reg.add_stream("audit.tail", audit_tail, params=AuditTailParams)
    reg.add("audit.verify", audit_verify, params=AuditVerifyParams)
    reg.add("audit.verify_chain", audit_verify_chain)
    reg.add("verify", functools.partial(verify, sums=sums), params=VerifyParams)
    reg.add("doctor", functools.partial(doctor, sums=sums, access=access))
