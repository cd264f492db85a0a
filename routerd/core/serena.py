"""Keeping Serena warm: the supervisor's state machine, restart backoff, the pool's eviction
rule, and the command line, environment and configuration files one Serena is started with.

Serena (PyPI ``serena-agent``) is an MCP server that answers symbol-level questions through a
language server. routerd runs one per workspace as a child process; ``routerd.shell.serena*``
carries out what this module decides.

Invariants:

* Pure: time is the ``now`` parameter, randomness the ``jitter`` parameter in ``[0, 1)``; no
  clock, file, environment or process is touched here.
* The supervisor's states and transitions live in one table, :data:`TRANSITIONS`; an event
  that the table does not allow in the current state raises :class:`InvalidTransition`
  (a bug in the caller, never a runtime condition).
* The restart delay grows exponentially with consecutive failures and never exceeds
  ``BackoffPolicy.maximum`` (jitter included); a Serena that stayed ready for
  ``stable_after`` seconds before failing starts the count again at one.
* :func:`plan_evictions` never stops a pinned (configured) or busy workspace; when the pool
  cannot make room it says so (``fits=False``) instead of exceeding ``max_running``.
* The command line always selects the tool interface, stdio and no dashboard or GUI window,
  and the environment always turns Serena's usage reporting off (an air-gap breach otherwise).
"""

from __future__ import annotations

import hashlib
import ntpath
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import msgspec

from routerd.core.serena_access import PathFlavor

__all__ = [
    "BackoffPolicy",
    "Evictions",
    "InvalidTransition",
    "LatencyWindow",
    "SerenaEvent",
    "SerenaState",
    "SupervisorStatus",
    "TRANSITIONS",
    "WorkspaceUsage",
    "advance",
    "backoff_delay",
    "base_name",
    "plan_evictions",
    "project_config",
    "serena_args",
    "serena_environment",
    "global_config",
    "source_masks",
    "workspace_key",
]


# --- the supervisor's state machine -------------------------------------------------------------


class SerenaState(StrEnum):
    STOPPED = "stopped"  # no process; the initial state, and after a clean stop
    STARTING = "starting"  # process spawned, MCP initialize in progress
    WARMING = "warming"  # initialized; paying the cold costs (tools, a throwaway lookup)
    READY = "ready"  # warm: calls are served
    BACKOFF = "backoff"  # crashed, hung or failed to start; waiting to retry
    STOPPING = "stopping"  # a stop or restart is killing the process group


class SerenaEvent(StrEnum):
    START = "start"  # spawn (first start, or retry after the backoff delay)
    INITIALIZED = "initialized"  # the MCP handshake finished
    WARMED = "warmed"  # warm-up done (partial warm-ups count: Serena answers)
    FAILED = "failed"  # spawn/initialize failed, the process died, a ping failed or hung
    RESTART = "restart"  # an explicit restart request: start again now, without backoff
    STOP = "stop"  # a clean stop was requested
    EXITED = "exited"  # the process group is gone after a stop


_S, _E = SerenaState, SerenaEvent

#: (state, event) -> next state. Anything else is an :class:`InvalidTransition`.
TRANSITIONS: Final[Mapping[tuple[SerenaState, SerenaEvent], SerenaState]] = {
    (_S.STOPPED, _E.START): _S.STARTING,
    (_S.BACKOFF, _E.START): _S.STARTING,
    (_S.STARTING, _E.INITIALIZED): _S.WARMING,
    (_S.WARMING, _E.WARMED): _S.READY,
    (_S.STARTING, _E.FAILED): _S.BACKOFF,
    (_S.WARMING, _E.FAILED): _S.BACKOFF,
    (_S.READY, _E.FAILED): _S.BACKOFF,
    (_S.STARTING, _E.RESTART): _S.STARTING,
    (_S.WARMING, _E.RESTART): _S.STARTING,
    (_S.READY, _E.RESTART): _S.STARTING,
    (_S.BACKOFF, _E.RESTART): _S.STARTING,
    (_S.STOPPED, _E.RESTART): _S.STARTING,
    (_S.STOPPED, _E.STOP): _S.STOPPED,
    (_S.STARTING, _E.STOP): _S.STOPPING,
    (_S.WARMING, _E.STOP): _S.STOPPING,
    (_S.READY, _E.STOP): _S.STOPPING,
    (_S.BACKOFF, _E.STOP): _S.STOPPING,
    (_S.STOPPING, _E.STOP): _S.STOPPING,
    (_S.STOPPING, _E.EXITED): _S.STOPPED,
    (_S.STOPPING, _E.FAILED): _S.STOPPED,  # dying while being stopped is a stop
}


class InvalidTransition(ValueError):
    """``event`` is not allowed in the current state (a caller bug)."""


class BackoffPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Restart delays: ``initial * factor**(failures-1)``, capped at ``maximum``, with up to
    ``jitter`` of it taken off at random so that many Serenas do not restart in step."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2  # fraction of the delay, 0 <= jitter < 1
    stable_after: float = 60.0  # seconds ready before a failure counts as a first failure


def backoff_delay(failures: int, policy: BackoffPolicy, jitter: float = 0.0) -> float:
    """Seconds to wait before the next start after ``failures`` consecutive failures (>= 1).

    ``jitter`` in ``[0, 1)`` takes up to ``policy.jitter`` of the delay off; 0 gives the full
    delay. Never more than ``policy.maximum``, never negative.
    """
    n = max(1, failures)
    # Cap the exponent first: factor**n overflows a float long before failures runs out.
    exponent = min(n - 1, 64)
    delay = min(policy.maximum, policy.initial * policy.factor**exponent)
    return max(0.0, delay * (1.0 - policy.jitter * min(max(jitter, 0.0), 0.999999)))


class SupervisorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One Serena's lifecycle record. ``restarts`` counts every start after the first."""

    state: SerenaState = SerenaState.STOPPED
    pid: int | None = None
    starts: int = 0
    failures: int = 0  # consecutive failures (backoff input); 0 once ready
    last_error: str | None = None
    last_error_at: float | None = None
    started_at: float | None = None  # when the current process was spawned
    ready_at: float | None = None  # when it last became ready
    next_retry_at: float | None = None  # in BACKOFF: when the next start is due

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def uptime(self, now: float) -> float | None:
        """Seconds the current process has been up, or None without one."""
        if self.started_at is None or self.state in (SerenaState.STOPPED, SerenaState.BACKOFF):
            return None
        return max(0.0, now - self.started_at)


def advance(
    status: SupervisorStatus,
    event: SerenaEvent,
    now: float,
    *,
    policy: BackoffPolicy,
    pid: int | None = None,
    error: str | None = None,
    jitter: float = 0.0,
) -> SupervisorStatus:
    """The status after ``event`` at ``now``. Raises :class:`InvalidTransition`.

    ``pid`` goes with START/RESTART (the spawned process, if already known) and INITIALIZED;
    ``error`` with FAILED (one line saying what went wrong); ``jitter`` in ``[0, 1)`` with FAILED.
    """
    nxt = TRANSITIONS.get((status.state, event))
    if nxt is None:
        raise InvalidTransition(f"{event.value} is not allowed while {status.state.value}")
    rep = msgspec.structs.replace
    if event in (SerenaEvent.START, SerenaEvent.RESTART):
        failures = 0 if event is SerenaEvent.RESTART else status.failures
        return rep(status, state=nxt, pid=pid, starts=status.starts + 1, failures=failures,
                   started_at=now, ready_at=None, next_retry_at=None)
    if event is SerenaEvent.INITIALIZED:
        return rep(status, state=nxt, pid=pid if pid is not None else status.pid)
    if event is SerenaEvent.WARMED:
        return rep(status, state=nxt, failures=0, ready_at=now)
    if event is SerenaEvent.FAILED:
        if nxt is SerenaState.STOPPED:
            return rep(status, state=nxt, pid=None, next_retry_at=None)
        stable = (status.ready_at is not None and status.state is SerenaState.READY
                  and now - status.ready_at >= policy.stable_after)
        failures = 1 if stable else status.failures + 1
        delay = backoff_delay(failures, policy, jitter)
        return rep(status, state=nxt, pid=None, failures=failures,
                   last_error=error or "failed", last_error_at=now, next_retry_at=now + delay,
                   ready_at=None)
    if event is SerenaEvent.STOP:
        return rep(status, state=nxt, next_retry_at=None)
    # EXITED
    return rep(status, state=nxt, pid=None, ready_at=None, next_retry_at=None)


# --- call latency -------------------------------------------------------------------------------


class LatencyWindow(msgspec.Struct, frozen=True):
    """The most recent call latencies (milliseconds), newest last, at most ``size`` of them."""

    samples: tuple[float, ...] = ()
    size: int = 100
    calls: int = 0  # all calls ever recorded, not only those in the window

    def record(self, ms: float) -> LatencyWindow:
        samples = (*self.samples, float(ms))[-self.size:]
        return msgspec.structs.replace(self, samples=samples, calls=self.calls + 1)

    def summary(self) -> dict[str, Any]:
        """``{calls, last_ms, p50_ms, p95_ms}`` (latencies None before the first call)."""
        if not self.samples:
            return {"calls": self.calls, "last_ms": None, "p50_ms": None, "p95_ms": None}
        ordered = sorted(self.samples)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

        return {"calls": self.calls, "last_ms": round(self.samples[-1], 1),
                "p50_ms": pct(0.5), "p95_ms": pct(0.95)}


# --- the pool ---------------------------------------------------------------------------------


class WorkspaceUsage(msgspec.Struct, frozen=True, kw_only=True):
    last_used: float
    pinned: bool = False  # configured workspaces: never evicted, never idle-stopped
    busy: bool = False  # a call is queued or running


class Evictions(msgspec.Struct, frozen=True):
    stop: list[str]  # workspaces to stop, in order
    fits: bool  # whether ``incoming`` (if any) can then run within max_running


def plan_evictions(
    usage: Mapping[str, WorkspaceUsage],
    *,
    max_running: int,
    idle_timeout: float,
    now: float,
    incoming: str | None = None,
) -> Evictions:
    """Which running workspaces to stop: the idle ones, then the least recently used, until
    ``incoming`` (a workspace about to start, or None) fits within ``max_running``.

    ``idle_timeout`` <= 0 disables idle stops. Pinned and busy workspaces are never chosen.
    """
    stop: list[str] = []
    movable = sorted(
        (u.last_used, ws) for ws, u in usage.items() if not u.pinned and not u.busy
        and ws != incoming
    )
    if idle_timeout > 0:
        stop.extend(ws for last, ws in movable if now - last >= idle_timeout)
    need = len(usage) + (1 if incoming is not None and incoming not in usage else 0)
    need -= len(stop)
    for _, ws in movable:
        if need <= max_running:
            break
        if ws not in stop:
            stop.append(ws)
            need -= 1
    return Evictions(stop=stop, fits=need <= max_running)


# --- how one Serena is started ----------------------------------------------------------------

#: Serena's own options, after the configured command (``serena start-mcp-server``). Without
#: ``--agent-interface tools`` Serena 2 exposes only its REPL tools.
_FIXED_ARGS: Final = (
    "--context", "agent",
    "--agent-interface", "tools",
    "--transport", "stdio",
    "--enable-web-dashboard", "false",
    "--enable-gui-log-window", "false",
    "--open-web-dashboard", "false",
)  # fmt: skip

#: Environment variables passed through to Serena; everything else is left out.
_PASSED_ENV: Final = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR",
                      "TZ")
#: Taken too on Windows: what programs need to start there at all (``SYSTEMROOT``: Python's
#: random numbers and sockets), the user's folders, and where temporary files go.
_PASSED_ENV_WINDOWS: Final = ("SYSTEMROOT", "WINDIR", "SYSTEMDRIVE", "COMSPEC", "PATHEXT",
                              "USERPROFILE", "HOMEDRIVE", "HOMEPATH", "APPDATA",
                              "LOCALAPPDATA", "PROGRAMDATA", "TEMP", "TMP", "USERNAME")


def serena_args(command: Sequence[str], project: str) -> list[str]:
    """The full argv: ``command`` (program and subcommand), the project, the fixed options."""
    return [*command, "--project", project, *_FIXED_ARGS]


def serena_environment(base: Mapping[str, str], *, home: str, program: str,
                       flavor: PathFlavor = "posix") -> dict[str, str]:
    """The environment Serena runs with.

    Only :data:`_PASSED_ENV` is taken from ``base`` (on Windows, ``flavor="windows"``, and
    :data:`_PASSED_ENV_WINDOWS`). ``SERENA_HOME`` is ``home`` (routerd's directory for this
    workspace, never the user's ``~/.serena``) and usage reporting is off. When ``program`` is
    a path (a virtual environment's ``bin/serena``, ``Scripts\\serena.exe`` on Windows), its
    directory goes first on ``PATH``: Serena finds language servers such as
    ``jedi-language-server`` there.
    """
    if flavor == "windows":
        env = {k: base[k] for k in (*_PASSED_ENV, *_PASSED_ENV_WINDOWS) if k in base}
        if "\\" in program or "/" in program:
            bindir = ntpath.dirname(program)
            rest = [p for p in env.get("PATH", "").split(";")
                    if p and ntpath.normcase(p) != ntpath.normcase(bindir)]
            env["PATH"] = ";".join([bindir, *rest])
        return _serena_variables(env, home)
    env = {k: base[k] for k in _PASSED_ENV if k in base}
    if "/" in program:
        bindir = posixpath.dirname(program)
        rest = [p for p in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
                if p and p != bindir]
        env["PATH"] = ":".join([bindir, *rest])
    return _serena_variables(env, home)


def _serena_variables(env: dict[str, str], home: str) -> dict[str, str]:
    env["SERENA_HOME"] = home
    env["SERENA_USAGE_REPORTING"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def global_config(
    *,
    data_dir: str,
    excluded_tools: Iterable[str],
    ls_settings: Mapping[str, Any],
    tool_timeout: float,
    auth_secret: str,
) -> dict[str, Any]:
    """Serena's ``serena_config.yml`` for one workspace (written as JSON, a YAML subset).

    ``project_serena_folder_location`` points at ``data_dir`` so Serena never writes a
    ``.serena`` folder into the user's project; ``projects`` must be present (an empty list).
    No project is trusted: symbolic links leading out of the project are not followed.
    ``tool_timeout`` is Serena's own limit per tool run; Serena refuses values below 10 s.
    """
    return {
        "language_backend": "LSP",
        "agent_interface": "tools",
        "gui_log_window": False,
        "web_dashboard": False,
        "web_dashboard_open_on_launch": False,
        "log_level": 20,
        "trace_lsp_communication": False,
        "ls_specific_settings": dict(ls_settings),
        "excluded_tools": sorted(set(excluded_tools)),
        "included_optional_tools": [],
        "fixed_tools": [],
        "tool_timeout": max(10.0, float(tool_timeout)),
        "project_serena_folder_location": data_dir,
        "trusted_project_path_patterns": [],
        "token_count_estimator": "CHAR_COUNT",
        "auth_secret": auth_secret,
        "projects": [],
    }


def project_config(
    *, name: str, languages: Sequence[str], read_only: bool, excluded_tools: Iterable[str]
) -> dict[str, Any]:
    """Serena's ``project.yml`` for one workspace, kept in routerd's data folder for it.

    ``read_only`` makes Serena itself refuse its editing tools (a second guard behind
    routerd's own allow-list).
    """
    return {
        "project_name": name,
        "language_servers": list(languages),
        "encoding": "utf-8",
        "read_only": read_only,
        "ignore_all_files_in_gitignore": True,
        "ignored_paths": [],
        "excluded_tools": sorted(set(excluded_tools)),
        "ls_specific_settings": {},
        "initial_prompt": "",
    }


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def workspace_key(path: str, *, flavor: PathFlavor = "posix") -> str:
    """A directory name for routerd's files about workspace ``path`` (an absolute real path):
    its base name, made safe, and a hash of the whole path (two ``src`` folders differ)."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    base = _UNSAFE.sub("_", base_name(path, flavor=flavor) or "root")[:40]
    return f"{base}-{digest}"


def base_name(path: str, *, flavor: PathFlavor = "posix") -> str:
    """The last component of ``path`` by ``flavor``'s rules, ignoring trailing separators
    (``""`` for a root: ``/``, ``C:\\``, ``\\\\server\\share``)."""
    if flavor == "windows":
        return ntpath.basename(path.rstrip("\\/"))
    return posixpath.basename(path.rstrip("/"))


#: File masks of the sources of Serena's language keys, for picking a warm-up file.
_MASKS: Final[Mapping[str, tuple[str, ...]]] = {
    "python": ("*.py",), "python_jedi": ("*.py",), "python_ty": ("*.py",),
    "python_basedpyright": ("*.py",), "python_pyrefly": ("*.py",),
    "typescript": ("*.ts", "*.tsx", "*.js"), "go": ("*.go",), "rust": ("*.rs",),
    "java": ("*.java",), "kotlin": ("*.kt",), "csharp": ("*.cs",), "cpp": ("*.cpp", "*.cc", "*.c"),
    "ruby": ("*.rb",), "php": ("*.php",), "bash": ("*.sh",), "lua": ("*.lua",),
}  # fmt: skip


def source_masks(languages: Sequence[str]) -> list[str]:
    """File masks for ``languages`` (Serena's language keys), in order, without repeats."""
    out: list[str] = []
    for lang in languages:
        for mask in _MASKS.get(lang, ()):
            if mask not in out:
                out.append(mask)
    return out
