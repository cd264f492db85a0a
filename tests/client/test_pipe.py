"""The Windows transport's platform-independent parts: pipe names, the socket-like PipeSocket
over a fake PipeIO, error wording, and the default path on Windows. The Windows I/O itself
(_WinPipeIO) is not run here: see docs/operations.md."""

from __future__ import annotations

import socket

import pytest

from routerd_client._pipe import (
    DEFAULT_PIPE,
    PipeSocket,
    Transport,
    connect_pipe,
    default_pipe_name,
    describe_pipe_error,
    is_pipe_name,
)
from routerd_client.paths import default_socket_path


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        (r"\\.\pipe\routerd", True),
        (r"\\.\PIPE\routerd-alice", True),
        (r"\\.\pipe\\", False),
        (r"\\.\pipe\a\b", False),
        (r"\\server\pipe\routerd", False),
        ("/run/routerd/routerd.sock", False),
        ("\\\\.\\pipe\\" + "x" * 250, False),
    ],
)
def test_pipe_names(name, ok):
    assert is_pipe_name(name) is ok


def test_default_pipe_name():
    assert default_pipe_name({}) == DEFAULT_PIPE == r"\\.\pipe\routerd"
    assert default_pipe_name({"ROUTERD_SOCKET": r"\\.\pipe\mine"}) == r"\\.\pipe\mine"
    with pytest.raises(ValueError, match="not a named pipe"):
        default_pipe_name({"ROUTERD_SOCKET": "/tmp/r.sock"})


def test_clients_on_windows_default_to_the_pipe():
    never = lambda path: pytest.fail(f"looked at {path}")  # noqa: E731
    assert default_socket_path({}, exists=never, platform="win32") == DEFAULT_PIPE
    env = {"ROUTERD_SOCKET": r"\\.\pipe\x", "XDG_RUNTIME_DIR": "/run/user/1"}
    assert default_socket_path(env, exists=never, platform="win32") == r"\\.\pipe\x"
    assert default_socket_path({}, exists=lambda p: False, platform="linux") != DEFAULT_PIPE


class FakeIO:
    """Writes at most 5 bytes at a time; reads hand out what was queued, then b''."""

    def __init__(self, incoming: list[bytes]) -> None:
        self.incoming = incoming
        self.written = bytearray()
        self.timeouts: list[float | None] = []
        self.closed = 0

    def read(self, size: int, timeout: float | None) -> bytes:
        self.timeouts.append(timeout)
        if not self.incoming:
            return b""
        chunk = self.incoming.pop(0)
        if chunk == b"TIMEOUT":
            raise TimeoutError("timed out on the pipe")
        return chunk[:size]

    def write(self, data: bytes, timeout: float | None) -> int:
        self.timeouts.append(timeout)
        self.written += data[:5]
        return min(5, len(data))

    def close(self) -> None:
        self.closed += 1


def test_pipe_socket_behaves_like_a_socket_for_the_client():
    io = FakeIO([b"abcdef", b"TIMEOUT"])
    sock: Transport = PipeSocket(io)
    sock.settimeout(2.5)
    sock.sendall(b"twelve bytes")  # three short writes
    assert bytes(io.written) == b"twelve bytes"
    assert sock.recv(4) == b"abcd"
    with pytest.raises(TimeoutError):
        sock.recv(100)
    assert sock.recv(100) == b""  # the daemon closed its end
    assert set(io.timeouts) == {2.5}
    sock.close()
    sock.close()
    assert io.closed == 1
    with pytest.raises(OSError):
        sock.recv(1)
    with pytest.raises(ValueError):
        PipeSocket(io).settimeout(-1)


def test_a_real_socket_fits_the_transport_interface():
    a, b = socket.socketpair()
    with a, b:
        t: Transport = a
        t.settimeout(1.0)
        t.sendall(b"x")
        assert b.recv(1) == b"x"


def test_error_wording():
    assert "not running" in describe_pipe_error(FileNotFoundError(2, "x"))
    assert "only the user" in describe_pipe_error(PermissionError(13, "x"))
    assert "busy" in describe_pipe_error(TimeoutError())
    assert describe_pipe_error(OSError(5, "odd")) == "odd"


def test_connect_pipe_off_windows_says_why():
    with pytest.raises(OSError, match="named pipes need Windows"):
        connect_pipe(DEFAULT_PIPE, 1.0)
