"""The MCP edge: a Serena process and the MCP session over its stdio.

Only this module imports the ``mcp`` SDK (tests and ``serena*`` siblings aside), and MCP's
errors stop here: every failure leaves as a :class:`~routerd.shell.serena_types.SerenaError`.

A :class:`Link` is one connection to a Serena: two message streams and, for a real process,
its pid and a way to kill it. :class:`ProcessLauncher` spawns the real thing in its own
session; tests pass a launcher whose links lead to an in-process MCP server. :func:`open_session`
runs the MCP handshake over a link and yields a :class:`SerenaSession`.

The SDK is anyio-based; under trio, anyio uses trio's primitives, so this runs in the daemon's
trio loop (and under trio's mock clock in tests).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types
import pydantic
import trio
from mcp import Client, MCPError
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage

from .osdeps import NEW_PROCESS_GROUP
from .serena_procs import kill_tree
from .serena_types import (
    LaunchSpec,
    Link,
    SerenaError,
    SerenaGone,
    SerenaProtocol,
    SerenaTimeout,
    ToolAnswer,
    ToolInfo,
)

__all__ = ["ProcessLauncher", "SerenaSession", "open_session", "translate"]

log = logging.getLogger(__name__)

#: Longest line Serena may write on stdout (its answers are bounded by max_answer_chars).
MAX_LINE = 32 * 1024 * 1024
#: Seconds a stopping Serena gets to exit after its stdin closes (it stops its language
#: servers then) before its process groups are killed.
STOP_GRACE = 1.0
STDERR_LINES = 40
_ERROR_LINE = re.compile(r"error|exception|traceback|invalid|cannot|failed", re.I)


class _ProcessLink:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self.exited = trio.Event()
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        send, recv = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        self._to_client = send
        self.read_stream = recv
        wsend, wrecv = anyio.create_memory_object_stream[SessionMessage](16)
        self.write_stream = wsend
        self._from_client = wrecv

    def exit_reason(self) -> str:
        rc = self.proc.returncode
        if rc is None:
            return "Serena closed its output but is still running"
        if rc < 0:
            return f"Serena was killed by signal {-rc}"
        # Serena logs at INFO on stderr; its last error line (if any) says why it gave up.
        last = next((line for line in reversed(self.stderr) if _ERROR_LINE.search(line)
                     and not line.startswith(("INFO", "DEBUG"))), "")
        return f"Serena exited with status {rc}" + (f": {last.strip()[:300]}" if last else "")

    def kill(self) -> None:
        if self.proc.returncode is None:
            kill_tree(self.proc.pid)

    def close_streams(self) -> None:
        for stream in (self._to_client, self.read_stream, self.write_stream, self._from_client):
            stream.close()

    async def pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        buf = bytearray()
        try:
            async with self._to_client:
                while True:
                    chunk = await self.proc.stdout.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                    while (nl := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        if line.strip():
                            await self._to_client.send(_parse_line(line))
                    if len(buf) > MAX_LINE:
                        log.error("Serena wrote a line longer than %d bytes; stopping it",
                                  MAX_LINE)
                        self.kill()
                        return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.ClosedResourceError):
            return

    async def pump_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            async with self._from_client:
                async for msg in self._from_client:
                    data = msg.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await self.proc.stdin.send_all(data.encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, anyio.ClosedResourceError,
                OSError):
            pass
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.proc.stdin.aclose()

    async def pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        buf = b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while chunk := await self.proc.stderr.receive_some(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace")
                    self.stderr.append(text)
                    log.debug("serena[%s]: %s", self.pid, text)
                buf = buf[-65536:]

    async def wait(self) -> None:
        await self.proc.wait()
        self.exited.set()


def _parse_line(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return SerenaProtocol(f"Serena wrote something that is not JSON-RPC: {exc}"[:300])


class ProcessLauncher:
    """Starts the real Serena: a child process in its own session (on Windows: process
    group), stdio piped."""

    def __init__(self, *, on_spawn: Callable[[int], None] | None = None) -> None:
        self._on_spawn = on_spawn

    @asynccontextmanager
    async def launch(self, spec: LaunchSpec) -> AsyncIterator[Link]:
        try:
            proc = await trio.lowlevel.open_process(
                spec.argv, stdin=-1, stdout=-1, stderr=-1, env=spec.env, cwd=spec.cwd,
                **NEW_PROCESS_GROUP)
        except OSError as exc:
            raise SerenaGone(f"cannot start {spec.argv[0]}: {exc.strerror or exc}") from None
        link = _ProcessLink(proc)
        if self._on_spawn is not None:
            self._on_spawn(proc.pid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.pump_stdout)
                nursery.start_soon(link.pump_stdin)
                nursery.start_soon(link.pump_stderr)
                nursery.start_soon(link.wait)
                try:
                    yield link
                finally:
                    with trio.CancelScope(shield=True):
                        await _stop(link)
                    nursery.cancel_scope.cancel()
        finally:
            link.close_streams()
            with trio.CancelScope(shield=True):
                link.kill()
                with trio.move_on_after(2.0):
                    await proc.wait()
                    link.exited.set()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()


async def _stop(link: _ProcessLink) -> None:
    """Close Serena's stdin, give it STOP_GRACE to exit, then kill its process groups."""
    await link.write_stream.aclose()
    with trio.move_on_after(STOP_GRACE):
        await link.exited.wait()
    link.kill()
    with trio.move_on_after(2.0):
        await link.exited.wait()


# --- the MCP session --------------------------------------------------------------------------


class _LinkTransport:
    """An ``mcp`` Transport over a link's streams (the link owns their lifetime)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    async def __aenter__(self) -> TransportStreams:
        return self._link.read_stream, self._link.write_stream

    async def __aexit__(self, *exc: object) -> None:
        return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out += _leaves(inner)
        return out
    return [exc]


def translate(exc: BaseException) -> SerenaError | None:
    """The :class:`SerenaError` for an exception out of the SDK, or None if it is not one of
    those (a cancellation, a bug) and must propagate as it is."""
    leaves = _leaves(exc)
    if any(isinstance(e, (trio.Cancelled, KeyboardInterrupt)) for e in leaves):
        return None
    for e in leaves:
        if isinstance(e, SerenaError):
            return e
        if isinstance(e, MCPError):
            if e.code == mcp_types.CONNECTION_CLOSED:
                return SerenaGone("the connection to Serena closed")
            if e.code == mcp_types.REQUEST_TIMEOUT:
                return SerenaTimeout("Serena did not answer in time")
            return SerenaProtocol(f"Serena: {e.message}"[:300])
        if isinstance(e, (anyio.ClosedResourceError, anyio.BrokenResourceError,
                          anyio.EndOfStream, trio.BrokenResourceError, trio.ClosedResourceError,
                          BrokenPipeError, ConnectionError)):
            return SerenaGone("the connection to Serena closed")
        if isinstance(e, (TimeoutError, trio.TooSlowError)):
            return SerenaTimeout("Serena did not answer in time")
        if isinstance(e, pydantic.ValidationError):
            return SerenaProtocol("Serena sent an answer that does not fit MCP")
    return None


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except BaseException as exc:
        mine = translate(exc)
        if mine is None:
            raise
        raise mine from None


class SerenaSession:
    """An initialized MCP session with one Serena. Methods raise :class:`SerenaError`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def server_version(self) -> str:
        info = self._client.server_info
        return info.version if info is not None else ""

    async def list_tools(self, timeout: float) -> list[ToolInfo]:
        tools: list[ToolInfo] = []
        cursor: str | None = None
        with _translated(), trio.fail_after(timeout):
            for _ in range(100):  # pages; Serena answers in one
                page = await self._client.list_tools(cursor=cursor)
                for t in page.tools:
                    ann = t.annotations
                    tools.append(ToolInfo(
                        name=t.name, description=t.description or "",
                        read_only=ann.read_only_hint if ann is not None else None,
                        input_schema=dict(t.input_schema or {})))
                cursor = page.next_cursor
                if cursor is None:
                    break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> ToolAnswer:
        with _translated(), trio.fail_after(timeout):
            result = await self._client.call_tool(name, arguments)
        texts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
        return ToolAnswer(text="\n".join(texts), is_error=bool(result.is_error))

    async def ping(self, timeout: float) -> None:
        with _translated(), trio.fail_after(timeout):
            await self._client.session.send_ping()


@asynccontextmanager
async def open_session(link: Link, *, timeout: float, version: str) -> AsyncIterator[
        SerenaSession]:
    """The MCP handshake over ``link`` (within ``timeout`` seconds), then a session until the
    block ends. Raises :class:`SerenaError` for failures of Serena, never MCP's own errors."""
    client = Client(_LinkTransport(link), mode="legacy", cache=None,
                    client_info=mcp_types.Implementation(name="routerd", version=version))
    # The client opens task groups that live as long as it does, so the handshake's time limit
    # is a scope around the whole session whose deadline is lifted once the handshake is done.
    with _translated():
        with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
            async with client:
                scope.deadline = math.inf
                yield SerenaSession(client)
        if scope.cancelled_caught:
            raise SerenaTimeout(f"Serena did not finish the MCP handshake in {timeout:g} s")

