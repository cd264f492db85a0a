"""Socket path resolution and taking a socket path over (lock, stale file, modes)."""

from __future__ import annotations

import fcntl
import grp
import logging
import os
import socket
import stat

import pytest

from routerd.shell.listener import SocketInUse, StartupError, open_listener
from routerd.shell.paths import (
    MAX_SOCKET_PATH,
    SYSTEM_SOCKET,
    SocketPathError,
    check_socket_path,
    resolve_socket_path,
)


def test_socket_path_order():
    env = {"ROUTERD_SOCKET": "/e/s.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert resolve_socket_path("/o/s.sock", env, "/c/s.sock") == "/o/s.sock"
    assert resolve_socket_path(None, env, "/c/s.sock") == "/e/s.sock"
    assert resolve_socket_path(None, {"XDG_RUNTIME_DIR": "/x"}, "/c/s.sock") == "/c/s.sock"
    assert resolve_socket_path(None, {"XDG_RUNTIME_DIR": "/x"}, None) == "/x/routerd/routerd.sock"
    assert resolve_socket_path(None, {"XDG_RUNTIME_DIR": "rel"}, None) == SYSTEM_SOCKET
    assert resolve_socket_path(None, {}, None) == SYSTEM_SOCKET
    assert resolve_socket_path("", {"ROUTERD_SOCKET": ""}, None) == SYSTEM_SOCKET
    assert resolve_socket_path("rel.sock", {}, None) == os.path.join(os.getcwd(), "rel.sock")


def test_socket_path_length_limit():
    check_socket_path("/" + "a" * (MAX_SOCKET_PATH - 1))
    with pytest.raises(SocketPathError, match=r"108 bytes long; AF_UNIX allows at most 107"):
        check_socket_path("/" + "a" * MAX_SOCKET_PATH)


def test_too_long_path_is_a_startup_error(short_tmp):
    path = short_tmp + "/" + "s" * 120
    with pytest.raises(StartupError, match="--socket"):
        open_listener(path, env={})
    assert os.listdir(short_tmp) == []


def test_creates_private_directory_and_socket_then_removes_them(short_tmp):
    path = f"{short_tmp}/run/routerd/d.sock"
    listener = open_listener(path, env={})
    try:
        assert not listener.inherited and listener.path == path
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close()
    finally:
        listener.close()
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")


def test_existing_directory_keeps_its_mode(short_tmp):
    os.chmod(short_tmp, 0o755)
    listener = open_listener(f"{short_tmp}/d.sock", env={})
    listener.close()
    assert stat.S_IMODE(os.stat(short_tmp).st_mode) == 0o755


def test_group_socket_is_0660(short_tmp):
    group = grp.getgrgid(os.getgid()).gr_name
    path = f"{short_tmp}/g/d.sock"
    listener = open_listener(path, group=group, env={})
    try:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o750
    finally:
        listener.close()


def test_unknown_group_is_refused(short_tmp):
    with pytest.raises(StartupError, match="does not exist"):
        open_listener(f"{short_tmp}/d.sock", group="no-such-group-xyz", env={})


def test_stale_socket_is_replaced(short_tmp, caplog):
    path = f"{short_tmp}/d.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO, logger="routerd"):
        listener = open_listener(path, env={})
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close()
        assert any("stale socket" in r.getMessage() for r in caplog.records)
    finally:
        listener.close()


def test_live_socket_is_not_taken_over(short_tmp):
    path = f"{short_tmp}/d.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(SocketInUse, match=f"already serving {path}"):
            open_listener(path, env={})
        assert os.path.exists(path)
    finally:
        live.close()


def test_a_file_that_is_not_a_socket_is_never_deleted(short_tmp):
    path = f"{short_tmp}/d.sock"
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(StartupError, match="not a socket"):
        open_listener(path, env={})
    with open(path) as f:
        assert f.read() == "precious"


def test_a_held_lock_refuses_the_takeover(short_tmp):
    path = f"{short_tmp}/d.sock"
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(SocketInUse, match="lock"):
            open_listener(path, env={})
        assert not os.path.exists(path)
    finally:
        os.close(fd)
    open_listener(path, env={}).close()  # free again once released


def test_close_leaves_a_socket_someone_else_replaced(short_tmp):
    path = f"{short_tmp}/d.sock"
    listener = open_listener(path, env={})
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    try:
        listener.close()
        assert os.path.exists(path)
    finally:
        other.close()
