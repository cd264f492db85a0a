"""routerd.shell.osdeps on POSIX (the branch that runs here), and the Windows state directory.

The Windows branches of osdeps are type-checked with ``mypy --platform win32`` only; nothing in
them has run (docs/operations.md, "Windows").
"""

from __future__ import annotations

import grp
import os
import pathlib
import pwd
import signal
import socket
import stat
import subprocess

import pytest
import trio

from routerd.shell import osdeps
from routerd.shell.state_dir import SYSTEM_STATE_DIR, resolve_state_dir


def test_open_flags_are_the_posix_ones() -> None:
    assert (osdeps.O_CLOEXEC, osdeps.O_NOFOLLOW, osdeps.O_BINARY) == (
        os.O_CLOEXEC, os.O_NOFOLLOW, 0
    )  # fmt: skip


def test_ids_and_the_user_database() -> None:
    assert osdeps.effective_uid() == os.geteuid()
    assert osdeps.effective_gid() == os.getegid()
    me = pwd.getpwuid(os.geteuid())
    assert osdeps.user_id(me.pw_name) == me.pw_uid
    assert osdeps.user_id("no-such-user-rd") is None
    group = grp.getgrgid(os.getegid())
    assert osdeps.group_id(group.gr_name) == group.gr_gid
    assert osdeps.group_id("no-such-group-rd") is None
    assert osdeps.home_of(me.pw_uid) == me.pw_dir
    assert osdeps.home_of(2**31 - 2) is None
    assert me.pw_gid in osdeps.user_groups(me.pw_uid, None)
    assert 4242 in osdeps.user_groups(me.pw_uid, 4242)  # the gid given counts
    assert osdeps.user_groups(2**31 - 2, None) == []


@pytest.mark.parametrize(
    ("mode", "exposed"), [(0o600, False), (0o700, False), (0o400, False), (0o640, True),
                          (0o604, True), (0o660, True)],
)  # fmt: skip
def test_others_may_access_reads_group_and_other_bits(mode: int, exposed: bool) -> None:
    assert osdeps.others_may_access(stat.S_IFREG | mode) is exposed


def test_make_private_narrows_to_0600(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    path.chmod(0o644)
    fd = os.open(path, os.O_RDONLY)
    try:
        osdeps.make_private(fd)
    finally:
        os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_lock_exclusive_refuses_a_second_holder_until_the_first_closes(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)  # another open file: flock conflicts as across processes
    try:
        osdeps.lock_exclusive(first)
        with pytest.raises(BlockingIOError):
            osdeps.lock_exclusive(second)
        os.close(first)
        first = -1
        osdeps.lock_exclusive(second)
    finally:
        for fd in (first, second):
            if fd >= 0:
                os.close(fd)


def test_set_reuse_address() -> None:
    with socket.socket() as sock:
        osdeps.set_reuse_address(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


async def test_new_process_group_and_kill_process_group() -> None:
    proc = await trio.lowlevel.open_process(["sleep", "60"], **osdeps.NEW_PROCESS_GROUP)
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgrp()
        assert osdeps.kill_process_group(proc.pid)
        with trio.fail_after(5):
            assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not osdeps.kill_process_group(proc.pid)  # gone (reaped)


def test_kill_process_group_never_kills_our_own_group_or_init() -> None:
    child = subprocess.Popen(["sleep", "60"])  # in our group
    try:
        assert not osdeps.kill_process_group(os.getpgrp())
        assert not osdeps.kill_process_group(1)
        assert not osdeps.kill_process_group(0)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


# --- the state directory, per platform -------------------------------------------------------


def test_windows_state_dir_is_under_local_app_data() -> None:
    local = r"C:\Users\ada\AppData\Local"
    env = {"LOCALAPPDATA": local, "USERPROFILE": r"C:\Users\ada", "HOME": "/home/ada"}
    found = resolve_state_dir(None, env, uid=None, platform="win32")
    assert found == pathlib.Path(local) / "routerd"
    profile = {"USERPROFILE": r"C:\Users\ada", "LOCALAPPDATA": "relative"}
    assert resolve_state_dir(None, profile, uid=None, platform="win32") == (
        pathlib.Path(r"C:\Users\ada") / "AppData" / "Local" / "routerd"
    )
    assert resolve_state_dir(r"D:\rd", env, uid=None, platform="win32") == pathlib.Path(r"D:\rd")


def test_posix_state_dir_is_unchanged() -> None:
    env = {"HOME": "/home/ada", "LOCALAPPDATA": r"C:\x"}
    assert resolve_state_dir(None, env, uid=1000, platform="linux") == pathlib.Path(
        "/home/ada/.local/state/routerd"
    )
    assert resolve_state_dir(None, {}, uid=0, platform="linux") == pathlib.Path(SYSTEM_STATE_DIR)
