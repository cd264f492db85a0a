"""One warm Serena: start it, warm it up, watch it, restart it, and serve its calls in turn.

Lifecycle (the table is ``routerd.core.serena.TRANSITIONS``): ``starting`` (spawn and MCP
handshake) -> ``warming`` (list tools, then one throwaway context gathering on a source file of
the project, which pays every cold cost: the language server's start, its first reference
lookup's built-in delay, the first diagnostics) -> ``ready``. While ready, an MCP ping every
``ping_interval`` checks it answers within ``ping_timeout``; a dead process, a failed ping, or
``HUNG_AFTER_TIMEOUTS`` call timeouts in a row is a failure: the process groups are killed and
the next start waits out an exponential backoff. ``request_restart()`` starts again at once;
``request_stop()`` stops cleanly (stdin closed, a short grace, then the groups are killed).

Calls (:meth:`Supervisor.call`) wait for ``ready`` and then take turns (Serena runs one tool at
a time): a fair lock, at most ``max_queue`` waiting, each bounded by its own timeout, so a slow
call delays the calls behind it on this Serena and nothing else.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from routerd.core.serena import (
    BackoffPolicy,
    LatencyWindow,
    SerenaEvent,
    SerenaState,
    SupervisorStatus,
    advance,
    source_masks,
)
from routerd.core.serena_access import WorkspaceSpec
from routerd.core.serena_context import ContextPlanner, ContextRequest, Step, StepOutcome

from .serena_types import (
    Launcher,
    LaunchSpec,
    Link,
    SerenaBusy,
    SerenaError,
    SerenaGone,
    SerenaTimeout,
    ToolAnswer,
    ToolInfo,
)

if TYPE_CHECKING:
    from .serena_mcp import SerenaSession

__all__ = ["HUNG_AFTER_TIMEOUTS", "Settings", "Supervisor", "run_plan"]

log = logging.getLogger(__name__)

#: Consecutive call timeouts after which Serena counts as hung and is restarted.
HUNG_AFTER_TIMEOUTS = 2


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    start_timeout: float = 120.0
    call_timeout: float = 30.0
    ping_interval: float = 15.0
    ping_timeout: float = 5.0
    policy: BackoffPolicy = BackoffPolicy()
    max_queue: int = 32
    warm_up: bool = True


#: Runs one step of a plan: ``(step, seconds left) -> outcome``.
StepRunner = Callable[[Step, float], Awaitable[StepOutcome]]


async def run_plan(planner: ContextPlanner, run: StepRunner, deadline: float) -> None:
    """Feed ``planner`` the outcomes of its steps until it is done or ``deadline`` passes.

    A step that fails adds a note and the plan goes on; :class:`SerenaGone` stops the plan
    (and propagates): nothing more will come from that Serena.
    """
    while (step := planner.next_step()) is not None:
        left = deadline - trio.current_time()
        if left <= 0:
            planner.feed(step, StepOutcome(failure="out of time"))
            continue
        try:
            outcome = await run(step, left)
        except SerenaGone:
            planner.feed(step, StepOutcome(failure="Serena is gone"))
            raise
        except SerenaError as exc:
            outcome = StepOutcome(failure=str(exc))
        planner.feed(step, outcome)


def _first_file(answer: ToolAnswer) -> str | None:
    if answer.is_error:
        return None
    try:
        data = msgspec.json.decode(answer.text)
    except msgspec.DecodeError:
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, list):
        for f in files:
            if isinstance(f, str) and f:
                return f
    return None


class Supervisor:
    """Keeps one Serena warm for ``spec``. ``prepare()`` writes Serena's files and returns how
    to start it; it runs before every start (a reload may have changed them)."""

    def __init__(
        self,
        spec: WorkspaceSpec,
        *,
        settings: Settings,
        launcher: Launcher,
        prepare: Callable[[], Awaitable[LaunchSpec]],
        version: str = "",
        rng: random.Random | None = None,
        on_pid: Callable[[int | None], None] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._launcher = launcher
        self._prepare = prepare
        self._version = version
        self._rng = rng or random.Random()
        self._on_pid = on_pid
        self.status = SupervisorStatus()
        self.tools: list[ToolInfo] = []
        self.latency = LatencyWindow()
        self.last_used = trio.current_time()
        self.warmup_ms: float | None = None
        self._session: SerenaSession | None = None
        self._link: Link | None = None
        self._last_link: Link | None = None
        self._changed = trio.Event()
        self._lock = trio.Lock()
        self._waiting = 0
        self._timeouts = 0
        self._stop_requested = False
        self._restart_requested = False
        self._failure: SerenaError | None = None
        self._life: trio.CancelScope | None = None
        self._wakeup: trio.Event = trio.Event()
        self.stopped = trio.Event()

    # --- control ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._waiting > 0

    @property
    def ready(self) -> bool:
        return self._session is not None

    def request_stop(self) -> None:
        """Stop cleanly; :attr:`stopped` is set once the process groups are gone."""
        self._stop_requested = True
        self._interrupt(kill=False)

    def request_restart(self) -> None:
        """Kill the current process (if any) and start again now, without backoff."""
        if self._stop_requested:
            return
        self._restart_requested = True
        self._interrupt(kill=True)

    def _interrupt(self, *, kill: bool, wake: bool = True) -> None:
        if kill and self._link is not None:
            self._link.kill()
        if self._life is not None:
            self._life.cancel()
        if wake:  # cut a backoff wait short (stop, restart)
            self._wakeup.set()

    def _fail(self, exc: SerenaError) -> None:
        """This life is over: record why (status says so at once), kill the process, and let
        the run loop clean up and start again after the backoff."""
        if self._failure is None and not self._stop_requested:
            self._failure = exc
            self._session = None  # no new calls on it, even before the clean-up ends
            self._advance(SerenaEvent.FAILED, error=str(exc), jitter=self._rng.random())
            self._interrupt(kill=True, wake=False)

    def _advance(self, event: SerenaEvent, **kw: Any) -> None:
        self.status = advance(self.status, event, trio.current_time(),
                              policy=self.settings.policy, **kw)
        self._changed.set()
        self._changed = trio.Event()

    # --- the run loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until :meth:`request_stop` or cancellation."""
        task_status.started()
        try:
            while not self._stop_requested:
                if self.status.state is SerenaState.BACKOFF and not self._restart_requested:
                    due = self.status.next_retry_at or trio.current_time()
                    with trio.move_on_at(due):
                        await self._wakeup.wait()
                    if self._stop_requested:
                        break
                restart = self._restart_requested and self.status.starts > 0
                self._restart_requested = False
                self._wakeup = trio.Event()
                self._advance(SerenaEvent.RESTART if restart else SerenaEvent.START)
                await self._one_life()
        finally:
            if self.status.state is not SerenaState.STOPPED:
                self._advance(SerenaEvent.STOP)
                self._advance(SerenaEvent.EXITED)
            self.stopped.set()

    async def _one_life(self) -> None:
        self._failure = None
        self._last_link = None
        self._timeouts = 0
        error: SerenaError | None = None
        with trio.CancelScope() as self._life:
            try:
                await self._live()
            except BaseException as exc:  # nurseries on the way wrap it in groups
                error = self._life_error(exc)
                if error is None:
                    if not isinstance(exc, Exception):  # a cancellation: not ours to stop
                        raise
                    # A bug must not take the daemon down with it: count it as a failure.
                    log.exception("the Serena supervisor for %s failed", self.spec.path)
                    error = SerenaError(f"internal error: {exc!r}"[:300])
        self._life = None
        error = self._failure or error
        last = self._last_link
        if isinstance(error, SerenaGone) and last is not None and last.exited.is_set():
            error = SerenaGone(last.exit_reason())  # says how it died, with its last words
        if self._stop_requested or error is None:
            return
        log.warning("Serena for %s failed: %s", self.spec.path, error)
        if self.status.state is SerenaState.BACKOFF:  # _fail recorded it already
            self.status = msgspec.structs.replace(self.status, last_error=str(error))
        else:
            self._advance(SerenaEvent.FAILED, error=str(error), jitter=self._rng.random())

    def _life_error(self, exc: BaseException) -> SerenaError | None:
        """The Serena failure in ``exc`` (perhaps inside exception groups), or None."""
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                found = self._life_error(inner)
                if found is not None:
                    return found
            return None
        if isinstance(exc, SerenaError):
            return exc
        if isinstance(exc, trio.TooSlowError):
            return SerenaTimeout(f"start and warm-up took longer than "
                                 f"{self.settings.start_timeout:g} s")
        return None

    async def _live(self) -> None:
        from .serena_mcp import open_session  # the SDK loads after READY (see serena_types)

        try:
            launch = await self._prepare()
        except OSError as exc:
            raise SerenaGone(f"cannot write Serena's files: {exc}") from None
        t0 = trio.current_time()
        try:
            async with self._launcher.launch(launch) as link:
                self._link = self._last_link = link
                if self._on_pid is not None and link.pid is not None:
                    self._on_pid(link.pid)
                async with open_session(link, timeout=self.settings.start_timeout,
                                        version=self._version) as session:
                    self._advance(SerenaEvent.INITIALIZED, pid=link.pid)
                    with trio.fail_after(max(0.001, t0 + self.settings.start_timeout
                                             - trio.current_time())):
                        self.tools = await session.list_tools(self.settings.call_timeout)
                        if self.settings.warm_up:
                            await self._warm_up(session)
                    self.warmup_ms = round((trio.current_time() - t0) * 1000.0, 1)
                    self._session = session  # before WARMED wakes the waiters
                    self._advance(SerenaEvent.WARMED)
                    if self._on_pid is not None and link.pid is not None:
                        self._on_pid(link.pid)  # again: the language servers run by now
                    log.info("Serena for %s is warm (pid %s, %.0f ms, %d tools)",
                             self.spec.path, link.pid, self.warmup_ms, len(self.tools))
                    await self._watch(link, session)
        finally:
            self._session = None
            self._link = None
            if self._on_pid is not None:
                self._on_pid(None)

    async def _watch(self, link: Link, session: SerenaSession) -> None:
        """Return only by cancellation (stop, restart, failure); report failures via _fail."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping_loop, session)
            await link.exited.wait()
            self._fail(SerenaGone(link.exit_reason()))
            await trio.sleep_forever()

    async def _ping_loop(self, session: SerenaSession) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            try:
                await session.ping(self.settings.ping_timeout)
            except SerenaTimeout:
                self._fail(SerenaTimeout(f"Serena did not answer a ping within "
                                         f"{self.settings.ping_timeout:g} s (hung)"))
            except SerenaError as exc:
                self._fail(exc)
            else:
                if self._on_pid is not None and self.status.pid is not None:
                    self._on_pid(self.status.pid)

    async def _warm_up(self, session: SerenaSession) -> None:
        timeout = self.settings.call_timeout
        file = None
        for mask in source_masks(self.spec.languages)[:3] or ["*"]:
            file = _first_file(await session.call_tool(
                "find_file", {"file_mask": mask, "relative_path": "."}, timeout))
            if file:
                break
        if file is None:
            return
        planner = ContextPlanner(ContextRequest(file=file, pick_symbol=True, references=True,
                                                diagnostics=True))

        async def step(s: Step, left: float) -> StepOutcome:
            answer = await session.call_tool(s.tool, s.arguments, min(timeout, left))
            return StepOutcome(text=answer.text, is_error=answer.is_error)

        await run_plan(planner, step, math.inf)

    async def wait_changed(self) -> None:
        """Wait for the next change of :attr:`status`."""
        await self._changed.wait()

    # --- calls ------------------------------------------------------------------------------

    async def wait_ready(self, deadline: float) -> bool:
        """Wait until ready (True) or ``deadline``, a stop, or a backoff past it (False)."""
        with trio.move_on_at(deadline):
            while self._session is None:
                st = self.status
                if self._stop_requested or (st.state is SerenaState.BACKOFF and (
                        st.next_retry_at or 0) > deadline):
                    return False
                await self._changed.wait()
            return True
        return False

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolAnswer:
        """Run one tool when ready and it is this call's turn, within ``timeout`` seconds in
        all. Raises :class:`SerenaBusy`, :class:`SerenaTimeout` or :class:`SerenaGone`."""
        if self._waiting >= self.settings.max_queue:
            raise SerenaBusy(f"{self._waiting} calls are already waiting for this Serena")
        deadline = trio.current_time() + timeout
        self._waiting += 1
        self.last_used = trio.current_time()
        try:
            while True:
                if not await self.wait_ready(deadline):
                    raise self.unready_error(timeout)
                with trio.move_on_at(deadline) as waiting:
                    await self._lock.acquire()
                if waiting.cancelled_caught:
                    # Serena is busy with earlier calls: slow, not hung (not counted).
                    raise SerenaTimeout(f"no turn with Serena within {timeout:g} s: "
                                        f"{self._waiting - 1} other calls were queued")
                try:
                    session = self._session
                    if session is None:
                        continue  # it went down while we waited for our turn
                    return await self._timed_call(session, tool, arguments, deadline)
                finally:
                    self._lock.release()
        finally:
            self._waiting -= 1
            self.last_used = trio.current_time()

    async def _timed_call(self, session: SerenaSession, tool: str, arguments: dict[str, Any],
                          deadline: float) -> ToolAnswer:
        t0 = trio.current_time()
        try:
            answer = await session.call_tool(tool, arguments, max(0.001, deadline - t0))
        except SerenaTimeout:
            raise self._timed_out(max(0.001, deadline - t0)) from None
        except SerenaGone as exc:
            self._fail(exc)
            raise
        self._timeouts = 0
        self.latency = self.latency.record((trio.current_time() - t0) * 1000.0)
        return answer

    def _timed_out(self, timeout: float) -> SerenaTimeout:
        self._timeouts += 1
        if self._timeouts >= HUNG_AFTER_TIMEOUTS:
            self._fail(SerenaTimeout(f"{self._timeouts} calls in a row timed out (hung)"))
        return SerenaTimeout(f"no answer from Serena within {timeout:g} s")

    def unready_error(self, timeout: float) -> SerenaError:
        st = self.status
        if self._stop_requested or st.state is SerenaState.STOPPED:
            return SerenaGone("Serena is stopped")
        if st.state is SerenaState.BACKOFF:
            return SerenaGone(f"Serena is down ({st.last_error}); it restarts soon")
        return SerenaTimeout(f"Serena is still {st.state.value} after {timeout:g} s")

    # --- status -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = trio.current_time()
        st = self.status
        uptime = st.uptime(now)
        return {
            "workspace": self.spec.path,
            "state": st.state.value,
            "pid": st.pid,
            "uptime_s": round(uptime, 1) if uptime is not None else None,
            "restarts": st.restarts,
            "last_error": st.last_error,
            "next_retry_in_s": (round(max(0.0, st.next_retry_at - now), 1)
                                if st.next_retry_at is not None else None),
            "configured": self.spec.configured,
            "writable": self.spec.writable,
            "tools": len(self.tools),
            "queued": self._waiting,
            "idle_s": round(max(0.0, now - self.last_used), 1),
            "warmup_ms": self.warmup_ms,
            "latency": self.latency.summary(),
        }
