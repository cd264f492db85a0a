"""The trio AsyncClient against an in-test trio fake daemon speaking the real protocol."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio

from routerd_client import errors
from routerd_client import protocol as p
from routerd_client.aio import AsyncClient
from routerd_client.framing import FrameParser, frame

_any = msgspec.msgpack.Decoder()


class TrioFakeDaemon:
    """Serves ``hello``, ``ping``, ``status``, ``echo``, ``fail``, ``count``, ``forever``,
    ``wait``, ``close``, ``unknown_id`` on a Unix socket from trio tasks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[dict[str, Any]] = []
        self.cancel_seen = trio.Event()
        self.streams: list[trio.SocketStream] = []

    def cancels(self) -> list[int]:
        return [m["id"] for m in self.received if m.get("type") == "cancel"]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(self.path)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                self.streams.append(stream)
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        lock = trio.Lock()
        cancelled: dict[int, trio.Event] = {}

        async def send(msg: Any) -> None:
            async with lock:
                await stream.send_all(frame(p.encode(msg)))

        async def forever(rid: int) -> None:
            i = 0
            while not cancelled[rid].is_set():
                await send(p.Event(id=rid, event="tick", data=i))
                i += 1
                with trio.move_on_after(0.002):
                    await cancelled[rid].wait()
            await send(p.Error(id=rid, code="cancelled", message="request cancelled"))

        async def wait(rid: int) -> None:
            await cancelled[rid].wait()
            await send(p.Error(id=rid, code="cancelled", message="request cancelled"))

        parser = FrameParser(p.DEFAULT_MAX_FRAME_SIZE)
        try:
            async with stream, trio.open_nursery() as nursery:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        nursery.cancel_scope.cancel()
                        return
                    parser.feed(data)
                    for body in parser.frames():
                        msg = _any.decode(body)
                        self.received.append(msg)
                        rid = msg["id"]
                        if msg["type"] == "cancel":
                            if rid in cancelled:
                                cancelled[rid].set()
                            self.cancel_seen.set()
                            continue
                        method, params = msg["method"], msg.get("params") or {}
                        cancelled[rid] = trio.Event()
                        if method == "hello":
                            await send(p.Result(id=rid, result={
                                "daemon": "routerd", "version": "9.8.7", "protocol": [1, 0],
                                "instance_id": "cd" * 16, "capabilities": ["ping"],
                                "max_frame_size": 1 << 20}))
                        elif method == "ping":
                            await send(p.Result(id=rid, result={}))
                        elif method == "echo":
                            await send(p.Result(id=rid, result=params))
                        elif method == "fail":
                            await send(p.Error(id=rid, code=params["code"], message="it failed"))
                        elif method == "count":
                            for i in range(params.get("n", 3)):
                                await send(p.Event(id=rid, event="item", data=i))
                            await send(p.Event(id=rid, event="end", data="done"))
                        elif method == "forever":
                            nursery.start_soon(forever, rid)
                        elif method == "wait":
                            nursery.start_soon(wait, rid)
                        elif method == "close":
                            nursery.cancel_scope.cancel()
                            return
                        elif method == "unknown_id":
                            await send(p.Result(id=rid + 1000, result={}))
                        else:
                            await send(p.Error(id=rid, code="unknown_method", message=method))
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the test closed this connection under our feet


@pytest.fixture
async def daemon(short_tmp: str) -> AsyncIterator[TrioFakeDaemon]:
    fake = TrioFakeDaemon(os.path.join(short_tmp, "routerd.sock"))
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        yield fake
        nursery.cancel_scope.cancel()


async def test_hello_and_typed_results(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path, client_name="t") as client:
        assert client.hello_result is not None
        assert client.hello_result.version == "9.8.7"
        assert client._conn.max_send_size == 1 << 20
        assert await client.ping() == p.PingResult()
        assert await client.call("echo", {"a": 1}) == {"a": 1}
        got = await client.call("echo", {"generation": 2, "config_path": None, "changed": True},
                                p.ReloadResult)
        assert got == p.ReloadResult(2, None, True)
    hello = daemon.received[0]
    assert hello["method"] == "hello"
    assert hello["params"]["client"] == {"name": "t", "version": "0.1.0"}
    assert hello["params"]["protocol"] == [1, 0]


async def test_error_replies_raise_mapped_exceptions(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        with pytest.raises(errors.Busy):
            await client.call("fail", {"code": "busy"})
        with pytest.raises(errors.UnknownMethod):
            await client.call("nope")
        assert await client.ping() == p.PingResult()


async def test_concurrent_calls_share_one_connection(daemon: TrioFakeDaemon) -> None:
    results: dict[int, Any] = {}
    async with AsyncClient(daemon.path) as client:

        async def one(i: int) -> None:
            results[i] = await client.call("echo", {"i": i})

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
    assert results == {i: {"i": i} for i in range(50)}
    assert len(daemon.streams) == 1


async def test_stream_to_the_end(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        async with client.stream("count", {"n": 5}) as stream:
            items = [event.data async for event in stream]
        assert items == [0, 1, 2, 3, 4]
        assert stream.end_data == "done"
        # without `async with`, iteration starts the request itself
        bare = client.stream("count", {"n": 2})
        assert [e.data async for e in bare] == [0, 1]
    assert daemon.cancels() == []


async def test_stream_error_is_raised(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client, client.stream("nope") as stream:
        with pytest.raises(errors.UnknownMethod):
            async for _ in stream:
                pass


async def test_leaving_a_stream_early_sends_cancel(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        async with client.stream("forever") as stream:
            async for event in stream:
                assert event.event == "tick"
                break
        with trio.fail_after(5):
            await daemon.cancel_seen.wait()
        assert daemon.cancels() == [stream.id]
        assert await client.ping() == p.PingResult()
        assert stream.id not in client._waiters


async def test_cancelling_the_calling_task_cancels_the_request(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        with trio.move_on_after(0.05):
            await client.call("wait")
        with trio.fail_after(5):
            await daemon.cancel_seen.wait()
        assert await client.ping() == p.PingResult()


async def test_timeout_raises_request_timeout(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path, timeout=5) as client:
        with pytest.raises(errors.RequestTimeout, match="'wait'"):
            await client.call("wait", timeout=0.05)
        with trio.fail_after(5):
            await daemon.cancel_seen.wait()
        assert await client.ping() == p.PingResult()


async def test_call_on_a_streaming_method_raises(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        with pytest.raises(errors.ProtocolViolation, match="use stream"):
            await client.call("forever")
        with trio.fail_after(5):
            await daemon.cancel_seen.wait()


async def test_connection_lost_fails_pending_calls(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        with pytest.raises(errors.ConnectionLost):
            await client.call("close")
        with pytest.raises(errors.ConnectionLost):
            await client.ping()


async def test_connection_lost_during_a_stream(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client, client.stream("forever") as stream:
        await stream.__anext__()
        for s in daemon.streams:
            await s.aclose()
        with pytest.raises(errors.ConnectionLost):
            async for _ in stream:
                pass


async def test_unknown_id_is_a_protocol_violation(daemon: TrioFakeDaemon) -> None:
    async with AsyncClient(daemon.path) as client:
        with pytest.raises(errors.ProtocolViolation, match="not in flight"):
            await client.call("unknown_id")
        assert client.closed


async def test_body_exceptions_are_not_wrapped_in_groups(daemon: TrioFakeDaemon) -> None:
    with pytest.raises(KeyError):
        async with AsyncClient(daemon.path) as client:
            await client.ping()
            raise KeyError("mine")


async def test_use_outside_async_with_is_an_error(daemon: TrioFakeDaemon) -> None:
    client = AsyncClient(daemon.path)
    with pytest.raises(errors.ConnectionLost, match="async with"):
        await client.ping()
    async with client:
        pass
    with pytest.raises(RuntimeError, match="once"):
        await client.__aenter__()


async def test_unreachable(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "none.sock")
    with pytest.raises(errors.DaemonUnreachable) as info:
        async with AsyncClient(path):
            pass  # pragma: no cover
    assert info.value.reason == "no such file"
