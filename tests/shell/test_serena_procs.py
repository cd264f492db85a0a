"""Killing Serena's process tree (it starts language servers in sessions of their own), and
reaping what a daemon killed with SIGKILL left behind."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import trio

from routerd.shell.serena_procs import PidBook, child_groups, kill_tree, start_time

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# A stand-in for Serena: it starts a "language server" in a session of its own, then waits.
SERENA_LIKE = (
    "import subprocess, sys, time\n"
    "ls = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
    "print(ls.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie nobody reaped yet is dead enough


async def spawn_serena_like() -> tuple[trio.Process, int]:
    proc = await trio.lowlevel.open_process([sys.executable, "-c", SERENA_LIKE],
                                            stdout=-1, start_new_session=True)
    assert proc.stdout is not None
    with trio.fail_after(10):
        line = await proc.stdout.receive_some(100)
    return proc, int(line.split()[0])


async def close(proc: trio.Process) -> None:
    kill_tree(proc.pid)
    await proc.wait()
    if proc.stdout is not None:
        await proc.stdout.aclose()


async def gone(*pids: int) -> None:
    with trio.fail_after(5):
        for _ in itertools.count():
            if not any(alive(p) for p in pids):
                return
            await trio.sleep(0.02)


async def test_kill_tree_takes_the_language_servers_too() -> None:
    proc, ls = await spawn_serena_like()
    try:
        assert child_groups(proc.pid) == [(ls, start_time(ls))]
        kill_tree(proc.pid)
        await proc.wait()
        await gone(proc.pid, ls)
    finally:
        await close(proc)


async def test_reap_kills_recorded_leftovers_but_not_a_reused_pid(tmp_path: Path) -> None:
    book = PidBook(tmp_path / "pids")
    proc, ls = await spawn_serena_like()
    other, other_ls = await spawn_serena_like()
    try:
        book.record("ws-a", proc.pid, child_groups(proc.pid))
        # A record whose start times do not match: the pids now belong to someone else.
        started = start_time(other.pid)
        assert started is not None
        (tmp_path / "pids" / "ws-b.json").write_text(json.dumps(
            {"daemon": 1, "groups": [[other.pid, started + 1], [other_ls, 0]]}))
        (tmp_path / "pids" / "junk.json").write_text("not json")
        killed = book.reap()
        assert sorted(killed) == sorted([proc.pid, ls])
        await proc.wait()
        await gone(proc.pid, ls)
        assert alive(other.pid) and alive(other_ls)
        assert list((tmp_path / "pids").glob("*.json")) == []
    finally:
        await close(proc)
        await close(other)


def test_forget_and_missing_directory(tmp_path: Path) -> None:
    book = PidBook(tmp_path / "none")
    assert book.reap() == []
    book.forget("nothing")
    book.record("ws", os.getpid())
    book.forget("ws", pid=os.getpid() + 1)  # someone else's record now: kept
    assert (tmp_path / "none" / "ws.json").exists()
    book.forget("ws", pid=os.getpid())
    assert not (tmp_path / "none" / "ws.json").exists()
