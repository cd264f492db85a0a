"""The trio named-pipe transport (routerd_client.trio_pipe) and the AsyncClient over it.

Everything runs against the in-memory pipe kernel (tests/fakes/pipes.py), which plays the
Windows calls; the real ones (Win32PipeIO, _Win32ClientOps) are not run here: see
docs/operations.md, "Windows". The daemon's own PipeListener with this client is tested in
tests/shell/test_transport.py.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from fakes.pipes import PipeKernel

from routerd_client import errors
from routerd_client import protocol as p
from routerd_client.aio import AsyncClient, default_opener
from routerd_client.framing import FrameParser, frame
from routerd_client.trio_pipe import PipeStream, open_pipe_stream

NAME = r"\\.\pipe\routerd-test"
_any = msgspec.msgpack.Decoder()


class PipeFakeDaemon:
    """Answers ``hello``, ``echo`` and ``count`` (a stream) on the pipe ``NAME``; ``close``
    makes it close the connection. One instance waits for a client at a time."""

    def __init__(self, kernel: PipeKernel) -> None:
        self.kernel = kernel

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            handle = self.kernel.create(NAME, False)
            task_status.started()
            while True:
                await self.kernel.connect(handle)
                nursery.start_soon(self._connection, PipeStream(handle, self.kernel))
                handle = self.kernel.create(NAME, False)

    async def _connection(self, stream: PipeStream) -> None:
        parser = FrameParser(p.DEFAULT_MAX_FRAME_SIZE)
        async with stream:
            while data := await stream.receive_some():
                parser.feed(data)
                for body in parser.frames():
                    msg = _any.decode(body)
                    rid, method = msg["id"], msg.get("method")
                    if method == "hello":
                        out: list[Any] = [p.Result(id=rid, result={
                            "daemon": "routerd", "version": "9.8.7", "protocol": [1, 0],
                            "instance_id": "ef" * 16, "capabilities": ["echo"],
                            "max_frame_size": 1 << 20})]  # fmt: skip
                    elif method == "echo":
                        out = [p.Result(id=rid, result=msg.get("params"))]
                    elif method == "count":
                        out = [p.Event(id=rid, event="item", data=i) for i in range(3)]
                        out.append(p.Event(id=rid, event="end", data="done"))
                    elif method == "close":
                        return
                    else:
                        out = [p.Error(id=rid, code="unknown_method", message=str(method))]
                    await stream.send_all(b"".join(frame(p.encode(m)) for m in out))


@pytest.fixture
async def kernel() -> AsyncIterator[PipeKernel]:
    kernel = PipeKernel(write_chunk=5, pid=31337)  # short writes: every layer must loop
    daemon = PipeFakeDaemon(kernel)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        yield kernel
        nursery.cancel_scope.cancel()


def pipe_client(kernel: PipeKernel, **kwargs: Any) -> AsyncClient:
    return AsyncClient(NAME, opener=functools.partial(open_pipe_stream, ops=kernel), **kwargs)


# --- the stream and opening ---------------------------------------------------------------------


async def test_one_sender_and_one_receiver_at_a_time(kernel: PipeKernel) -> None:
    stream = await open_pipe_stream(NAME, ops=kernel)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.receive_some()
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError):
        await stream.receive_some(0)
    await stream.send_all(b"")  # nothing to send is fine
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")


async def test_opening_waits_while_every_instance_is_busy() -> None:
    kernel = PipeKernel()
    server = kernel.create(NAME, False)
    first = await open_pipe_stream(NAME, ops=kernel)
    async with trio.open_nursery() as nursery:
        opened: list[PipeStream] = []

        async def second() -> None:
            opened.append(await open_pipe_stream(NAME, ops=kernel))

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert kernel.busy_opens == 1 and not opened
        kernel.create(NAME, False)  # the server makes the next instance
    assert kernel.busy_opens == 1 and len(opened) == 1
    await first.aclose()
    kernel.close(server)


async def test_opening_fails_clearly() -> None:
    kernel = PipeKernel()
    with pytest.raises(FileNotFoundError):
        await open_pipe_stream(NAME, ops=kernel)
    with pytest.raises(OSError, match="not a named pipe"):
        await open_pipe_stream("/run/routerd/routerd.sock", ops=kernel)
    with pytest.raises(OSError, match="named pipes need Windows"):
        await open_pipe_stream(NAME)


def test_the_opener_is_the_pipe_on_windows_only() -> None:
    assert default_opener("win32") is open_pipe_stream
    assert default_opener("linux") is trio.open_unix_socket
    assert default_opener("darwin") is trio.open_unix_socket


# --- the AsyncClient over a pipe ------------------------------------------------------------


async def test_async_client_calls_and_streams_over_the_pipe(kernel: PipeKernel) -> None:
    async with pipe_client(kernel, client_name="t") as client:
        assert client.hello_result is not None and client.hello_result.version == "9.8.7"
        payload = {"text": "x" * 100_000}  # many short writes each way
        assert await client.call("echo", payload) == payload

        async def one(i: int) -> None:
            assert await client.call("echo", {"i": i}) == {"i": i}

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        async with client.stream("count") as stream:
            assert [e.data async for e in stream] == [0, 1, 2]
        assert stream.end_data == "done"
        with pytest.raises(errors.UnknownMethod):
            await client.call("nope")


async def test_async_client_sees_the_daemon_close_the_pipe(kernel: PipeKernel) -> None:
    async with pipe_client(kernel) as client:
        with pytest.raises(errors.ConnectionLost):
            await client.call("close")
        assert client.closed


@pytest.mark.parametrize(
    ("refusal", "words"),
    [
        (None, "not running"),  # nobody serves the name
        (PermissionError(13, "Access is denied"), "only the user who started routerd"),
    ],
)
async def test_async_client_says_why_the_pipe_cannot_be_opened(
    refusal: OSError | None, words: str
) -> None:
    kernel = PipeKernel()
    if refusal is not None:
        kernel.create(NAME, False)
        kernel.refuse_with = refusal
    with pytest.raises(errors.DaemonUnreachable, match=words) as info:
        async with pipe_client(kernel):
            pass
    assert NAME in str(info.value)


async def test_async_client_times_out_while_the_pipe_stays_busy() -> None:
    kernel = PipeKernel()
    kernel.create(NAME, False)
    await open_pipe_stream(NAME, ops=kernel)  # takes the only instance
    with pytest.raises(errors.DaemonUnreachable, match="timed out"):
        async with pipe_client(kernel, timeout=0.05):
            pass
