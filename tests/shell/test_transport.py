"""The daemon's transports: the platform choices, and the server over any trio Listener.

The same conversation is held over the Unix socket, over an in-memory listener and over the
named-pipe listener (on the in-memory pipe kernel of tests/fakes/pipes.py, which plays the
Windows calls), against one daemon: every frame must come back the same. The real Windows
calls are not run here: see docs/operations.md, "Windows".
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import pytest
import trio
import trio.testing
from fakes.pipes import PipeKernel

from routerd.shell import listener as unix_listener
from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.osdeps import SELF_UID
from routerd.shell.server import Server
from routerd.shell.transport import (
    SocketInUse,
    StartupError,
    open_endpoint,
    serve_address,
    signal_names,
)
from routerd.shell.winpipe import PipeListener
from routerd_client import protocol as p
from routerd_client.aio import AsyncClient
from routerd_client.framing import frame
from routerd_client.trio_pipe import open_pipe_stream

PIPE = r"\\.\pipe\routerd-test"


# --- platform choices -----------------------------------------------------------------------


def test_unix_address_order_is_unchanged():
    env = {"ROUTERD_SOCKET": "/tmp/env.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert serve_address("/tmp/opt.sock", env, "/tmp/cfg.sock", platform="linux") == "/tmp/opt.sock"
    assert serve_address(None, env, "/tmp/cfg.sock", platform="linux") == "/tmp/env.sock"
    assert serve_address(None, {}, "/tmp/cfg.sock", platform="linux") == "/tmp/cfg.sock"
    assert serve_address(None, {"XDG_RUNTIME_DIR": "/run/user/7"}, None, platform="darwin") == (
        "/run/user/7/routerd/routerd.sock"
    )


def test_windows_serves_a_named_pipe_in_the_same_order():
    assert serve_address(None, {"XDG_RUNTIME_DIR": "/x"}, None, platform="win32") == (
        r"\\.\pipe\routerd"
    )
    env = {"ROUTERD_SOCKET": r"\\.\pipe\env"}
    assert serve_address(r"\\.\pipe\opt", env, r"\\.\pipe\cfg", platform="win32") == (
        r"\\.\pipe\opt"
    )
    assert serve_address(None, env, r"\\.\pipe\cfg", platform="win32") == r"\\.\pipe\env"
    assert serve_address(None, {}, r"\\.\pipe\cfg", platform="win32") == r"\\.\pipe\cfg"


@pytest.mark.parametrize(
    ("option", "env", "configured", "source"),
    [
        ("/tmp/r.sock", {}, None, "--socket"),
        (None, {"ROUTERD_SOCKET": "/run/routerd/routerd.sock"}, None, "ROUTERD_SOCKET"),
        (None, {}, r"\\server\pipe\routerd", "daemon.socket"),
    ],
)
def test_windows_refuses_what_is_not_a_pipe(option, env, configured, source):
    with pytest.raises(StartupError, match=f"{source} is .* not a named pipe"):
        serve_address(option, env, configured, platform="win32")


def test_signals_by_platform():
    assert signal_names("linux") == (("SIGTERM", "SIGINT"), ("SIGHUP",))
    stop, reload = signal_names("win32")
    assert "SIGBREAK" in stop and "SIGINT" in stop
    assert reload == ()  # no SIGHUP on Windows: config.reload is the way
    for name in sum(signal_names(), ()):
        assert signal.Signals[name]  # the ones for this platform exist here


def test_startup_errors_are_one_class_wherever_imported():
    assert unix_listener.StartupError is StartupError
    assert unix_listener.SocketInUse is SocketInUse


def test_the_unix_endpoint_listens_and_cleans_up(short_tmp, kit):
    path = f"{short_tmp}/e.sock"
    endpoint = open_endpoint(kit.config_with().daemon, path, {})
    assert endpoint.address == path
    assert isinstance(endpoint.listener, trio.SocketListener)
    assert os.stat(path).st_mode & 0o777 == 0o600
    endpoint.close()
    assert not os.path.exists(path)


# --- the server over any listener -----------------------------------------------------------


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out the server ends of in-memory stream pairs made by :meth:`connect`."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self.closed = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self.closed.set()
        await self._receive.aclose()


async def serve_on(nursery: trio.Nursery, app: App, listener: trio.abc.Listener[Any]) -> Server:
    """A second server of ``app`` (same registry, counters, instance id) on ``listener``."""
    server = Server(app, listener, app.registry)
    await nursery.start(server.run)
    return server


async def conversation(wire: Any) -> list[dict[str, Any]]:
    """What a client sees for a fixed exchange: results, errors, a stream, a cancel."""
    seen = [await wire.call(1, "hello", p.HelloParams(client=p.ClientInfo("t", "1")))]
    seen.append(await wire.call(2, "ping"))
    seen.append(await wire.call(3, "no.such.method"))
    seen.append(await wire.call(4, "test.error", {"code": "not_found", "message": "gone"}))
    await wire.request(5, "test.stream", {"count": 3, "size": 2})
    for _ in range(4):
        seen.append(await wire.recv())
    await wire.request(6, "test.sleep", {"seconds": 30})
    await wire.send({"type": "cancel", "id": 6})
    seen.append(await wire.recv())
    await wire.send_raw(frame(b"\xc1"))  # not msgpack: an error, and the connection stays
    seen.append(await wire.recv())
    seen.append(await wire.call(7, "ping"))
    await wire.send_raw(b"\xff\xff\xff\xff")  # a length over the limit: error, then closed
    seen.extend(await wire.expect_eof())
    return seen


async def test_every_transport_holds_the_same_conversation(start_daemon, connect, kit, nursery):
    app = await start_daemon()
    over_socket = await conversation(await connect(app))

    memory = MemoryListener()
    await serve_on(nursery, app, memory)
    over_memory = await conversation(kit.Wire(await memory.connect()))

    kernel = PipeKernel(write_chunk=3)
    await serve_on(nursery, app, PipeListener(PIPE, kernel))
    over_pipe = await conversation(kit.Wire(await open_pipe_stream(PIPE, ops=kernel)))

    assert over_socket[0]["result"]["instance_id"] == app.instance_id
    assert [m.get("code") for m in over_socket if m["type"] == "error"] == [
        "unknown_method", "not_found", "cancelled", "bad_frame", "frame_too_large",
    ]
    assert over_memory == over_socket
    assert over_pipe == over_socket


async def test_peer_identity_per_transport(start_daemon, connect, kit, nursery):
    app = await start_daemon()
    assert app.server is not None
    wire = await connect(app)
    await wire.call(1, "ping")
    (conn,) = app.server.connections
    assert (conn.info.peer_pid, conn.info.peer_uid) == (os.getpid(), os.getuid())
    assert conn.outbound._fd is not None  # sockets keep the direct-write fast path

    kernel = PipeKernel(pid=4321)
    pipe_server = await serve_on(nursery, app, PipeListener(PIPE, kernel))
    pipe_wire = kit.Wire(await open_pipe_stream(PIPE, ops=kernel))
    await pipe_wire.call(1, "ping")
    (piped,) = pipe_server.connections
    # The pipe gives the client's pid; its DACL admits only our user, whose uid there is the
    # stand-in SELF_UID (no gid: Windows has no groups).
    assert (piped.info.peer_pid, piped.info.peer_uid, piped.info.peer_gid) == (4321, SELF_UID,
                                                                               None)
    assert piped.outbound._fd is None


class RecordingAccess:
    def __init__(self) -> None:
        self.admitted: list[Any] = []

    def admit(self, info: ConnectionInfo, sock: Any) -> str | None:
        self.admitted.append(sock)
        return "not you" if len(self.admitted) > 1 else None

    def authorize(self, info: ConnectionInfo, method: str) -> str | None:
        return None


async def test_admission_asks_the_hook_for_sockets_and_the_dacl_for_pipes(
    start_daemon, connect, kit, nursery
):
    app = await start_daemon()
    access = RecordingAccess()
    app.access = access
    first = await connect(app)
    assert (await first.call(1, "ping"))["type"] == "result"
    (sock,) = access.admitted
    assert isinstance(sock, trio.socket.SocketType)  # the hook reads SO_PEERCRED from it
    refused = await connect(app)
    assert [m.get("code") for m in await refused.expect_eof()] == ["forbidden"]

    kernel = PipeKernel()
    await serve_on(nursery, app, PipeListener(PIPE, kernel))
    piped = kit.Wire(await open_pipe_stream(PIPE, ops=kernel))
    assert (await piped.call(1, "ping"))["type"] == "result"
    assert len(access.admitted) == 2  # not asked about the pipe client


async def test_the_connection_cap_and_shutdown_over_a_generic_listener(start_daemon, kit, nursery):
    app = await start_daemon(max_connections=1)
    memory = MemoryListener()
    server = await serve_on(nursery, app, memory)
    kept = kit.Wire(await memory.connect())
    assert (await kept.call(1, "ping"))["type"] == "result"
    extra = kit.Wire(await memory.connect())
    frames = await extra.expect_eof()
    assert [(m["type"], m["id"], m["code"]) for m in frames] == [("error", None, "busy")]
    server.stop_accepting()
    with trio.fail_after(5):
        await memory.closed.wait()
    assert (await kept.call(2, "ping"))["type"] == "result"  # open connections carry on


async def test_async_client_talks_to_the_daemon_over_the_pipe(start_daemon, nursery, probe):
    app = await start_daemon()
    kernel = PipeKernel(write_chunk=1000)
    await serve_on(nursery, app, PipeListener(PIPE, kernel))
    opener = functools.partial(open_pipe_stream, ops=kernel)
    async with AsyncClient(PIPE, opener=opener) as client:
        assert client.hello_result is not None
        assert client.hello_result.instance_id == app.instance_id
        assert await client.ping() == p.PingResult()
        status = await client.status()
        assert status.instance_id == app.instance_id
        big = await client.call("test.big", {"size": 200_000})
        assert big == "b" * 200_000
        async with client.stream("test.stream", {"count": 5, "size": 10}) as events:
            assert [e.data["n"] async for e in events] == [0, 1, 2, 3, 4]

        with trio.move_on_after(0.2):
            await client.call("test.sleep", {"seconds": 30})
        await trio.testing.wait_all_tasks_blocked()  # the cancel frame has gone through
        assert len(probe.cancelled) == 1  # cancelling the caller cancelled it in the daemon
