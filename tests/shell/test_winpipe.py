"""The named-pipe listener over the in-memory pipe kernel (tests/fakes/pipes.py).

The kernel plays Windows: one client per instance, FILE_FLAG_FIRST_PIPE_INSTANCE, EOF after the
client closes, broken pipe, closing a handle fails its pending I/O. The clients here are the
client package's real pipe stream over the same kernel. The real calls (_Win32Ops) are not run
here: see docs/operations.md, "Windows".
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fakes.pipes import PipeKernel

from routerd.shell.winpipe import (
    PIPE_MODE,
    PipeInUse,
    PipeListener,
    PipeStream,
    open_mode,
    pipe_sddl,
)
from routerd_client.trio_pipe import open_pipe_stream

NAME = r"\\.\pipe\routerd"


def test_sddl_admits_only_the_user_and_no_network_logon():
    sid = "S-1-5-21-3623811015-3361044348-30300820-1013"
    assert pipe_sddl(sid) == f"D:P(D;;GA;;;NU)(A;;GA;;;{sid})"


@pytest.mark.parametrize(
    "bad", ["", "S-1", "WD", "S-1-5-21-1)(A;;GA;;;WD", "S-1-5-21-1\n", "s-1-5-18", "S-1-5-x"]
)
def test_sddl_refuses_anything_but_a_sid(bad):
    with pytest.raises(ValueError, match="not a SID"):
        pipe_sddl(bad)


def test_open_mode_is_exclusive_only_for_the_first_instance():
    first_flag = 0x00080000
    assert open_mode(True) & first_flag
    assert not open_mode(False) & first_flag
    for first in (True, False):
        assert open_mode(first) & 0x40000000  # overlapped
        assert open_mode(first) & 0x3 == 0x3  # duplex
    assert PIPE_MODE & 0x8  # remote clients rejected
    assert PIPE_MODE & 0x6 == 0  # byte type, byte read mode


async def test_the_first_instance_exists_when_the_listener_does():
    kernel = PipeKernel()
    listener = PipeListener(NAME, kernel)
    (inst,) = kernel.instances
    assert inst.first
    with pytest.raises(PipeInUse):
        PipeListener(NAME, kernel)
    await listener.aclose()
    PipeListener(NAME, kernel).close()  # the name is free again once closed


async def accept_one(listener: PipeListener, kernel: PipeKernel) -> tuple[PipeStream, PipeStream]:
    """Accept one client of ``listener``; return (server end, client end)."""
    async with trio.open_nursery() as nursery:
        accepted: list[PipeStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        await trio.testing.wait_all_tasks_blocked()
        client = await open_pipe_stream(listener.name, ops=kernel)
    return accepted[0], client


async def test_accept_serves_a_client_and_leaves_the_next_instance_waiting():
    kernel = PipeKernel(write_chunk=7, pid=777)
    listener = PipeListener(NAME, kernel)
    server, client = await accept_one(listener, kernel)
    assert server.peer_pid == 777
    (waiting,) = kernel.waiting(NAME)  # already there for the next client
    assert not waiting.first

    await client.send_all(b"hello")
    assert await server.receive_some(3) == b"hel"
    assert await server.receive_some() == b"lo"
    await server.send_all(b"a reply longer than one short write")
    received = b""
    while len(received) < 35:
        received += await client.receive_some()
    assert received == b"a reply longer than one short write"

    await client.aclose()
    assert await server.receive_some() == b""  # EOF
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_some()
    await listener.aclose()
    assert kernel.waiting(NAME) == []
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_what_the_server_wrote_before_closing_is_still_read():
    kernel = PipeKernel()
    listener = PipeListener(NAME, kernel)
    server, client = await accept_one(listener, kernel)
    await server.send_all(b"last words")
    await server.aclose()
    assert await client.receive_some() == b"last words"
    assert await client.receive_some() == b""
    await client.aclose()
    await listener.aclose()


async def test_accept_creates_the_next_instance_later_if_it_could_not_at_once():
    kernel = PipeKernel()
    listener = PipeListener(NAME, kernel)
    kernel.fail_create = True
    server, client = await accept_one(listener, kernel)  # served regardless
    assert kernel.waiting(NAME) == []  # could not make one...
    kernel.fail_create = False
    with trio.move_on_after(0.05):
        await listener.accept()  # ...the next accept does
    assert len(kernel.waiting(NAME)) == 1
    for resource in (server, client, listener):
        await resource.aclose()


async def test_a_cancelled_accept_keeps_its_instance_for_the_next():
    kernel = PipeKernel()
    listener = PipeListener(NAME, kernel)
    with trio.move_on_after(0.01):
        await listener.accept()
    assert len(kernel.live(NAME)) == 1
    server, client = await accept_one(listener, kernel)
    assert len(kernel.instances) == 2  # the first instance served; one more now waits
    for resource in (server, client, listener):
        await resource.aclose()


async def test_closing_a_stream_fails_a_pending_receive():
    kernel = PipeKernel()
    listener = PipeListener(NAME, kernel)
    server, client = await accept_one(listener, kernel)
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()
    await client.aclose()
    await listener.aclose()


def test_without_windows_the_default_ops_refuse_clearly():
    with pytest.raises(OSError, match="named pipes need Windows"):
        PipeListener(NAME)
