"""Outbound: frames in order, the direct write, and ``soon`` frames lingering for the next one
(a stream's ``selected`` event and its first chunk in one write, one wake-up of the client)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from routerd.shell.outbound import LINGER, Outbound


class Pair:
    def __init__(self, nursery: trio.Nursery, linger: float) -> None:
        a, b = socket.socketpair()
        self.peer = b
        self.peer.setblocking(False)
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        self.out = Outbound(self.stream, fd=a.fileno(), linger=linger)

    def close(self) -> None:
        self.out.close()
        self.stream.socket.close()
        self.peer.close()

    def pending(self) -> bytes:
        """What the client could read now, at once."""
        try:
            return self.peer.recv(65536)
        except BlockingIOError:
            return b""


@pytest.fixture
async def slow_linger(nursery: trio.Nursery) -> AsyncIterator[Pair]:
    p = Pair(nursery, linger=3600.0)  # real time: the linger never ends within a test
    await nursery.start(p.out.run)
    yield p
    p.close()


async def settle() -> None:
    for _ in range(5):
        await trio.lowlevel.checkpoint()


async def test_a_frame_put_when_nothing_is_queued_is_written_at_once(slow_linger: Pair) -> None:
    slow_linger.out.put(b"one")
    assert slow_linger.pending() == b"one"  # before any task switch: the direct write
    assert slow_linger.out.backlog == 0


async def test_a_soon_frame_lingers_and_goes_out_with_the_next_frame(slow_linger: Pair) -> None:
    credit = trio.Semaphore(1)
    await credit.acquire()
    slow_linger.out.put(b"selected;", credit, soon=True)
    await settle()
    assert slow_linger.pending() == b""  # the writer waits for company
    assert credit.value == 0  # not handed to the kernel yet
    slow_linger.out.put(b"chunk;")
    assert slow_linger.pending() == b"selected;chunk;"  # one write, in order
    assert credit.value == 1
    assert slow_linger.out.backlog == 0
    await slow_linger.out.wait_flushed()  # nothing left: returns


async def test_several_soon_frames_linger_together(slow_linger: Pair) -> None:
    for part in (b"a;", b"b;", b"c;"):
        slow_linger.out.put(part, soon=True)
        await settle()
    assert slow_linger.pending() == b""
    slow_linger.out.put(b"end;")
    assert slow_linger.pending() == b"a;b;c;end;"


async def test_a_lingering_frame_goes_out_alone_when_the_time_is_up(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    p = Pair(nursery, linger=LINGER)
    await nursery.start(p.out.run)
    credit = trio.Semaphore(1)
    await credit.acquire()
    start = trio.current_time()
    p.out.put(b"selected;", credit, soon=True)
    await p.out.wait_flushed()
    assert trio.current_time() - start == pytest.approx(LINGER)
    assert p.pending() == b"selected;"
    assert credit.value == 1
    p.close()


async def test_frames_queued_behind_a_write_in_progress_keep_their_order() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    out = Outbound(stream, fd=a.fileno(), linger=3600.0)
    big = b"x" * 1_000_000
    received = bytearray()
    all_read = trio.Event()

    async def read() -> None:
        peer = trio.socket.from_stdlib_socket(b)
        while len(received) < len(big) + 4:
            received.extend(await peer.recv(65536))
        all_read.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(out.run)
        out.put(big)  # more than the kernel takes at once: the rest is queued
        out.put(b"s;", soon=True)  # behind real frames: no lingering, in order
        out.put(b"e;")
        nursery.start_soon(read)
        await out.wait_flushed()
        with trio.fail_after(10):
            await all_read.wait()
        nursery.cancel_scope.cancel()
    assert bytes(received) == big + b"s;e;"
    stream.socket.close()
    b.close()
