"""A fake routerd for the client tests: a thread serving the real wire protocol on a Unix socket.

It answers a fixed set of methods the way the protocol says a daemon must, byte for byte
through the same framing and message types, and records every message it receives.

Methods: ``hello``, ``ping``, ``status``, ``config.reload`` (answers per ``reload_error``),
``echo`` (result: the params), ``fail`` (error with the code in params ``code``), ``count``
(stream of ``n`` events then ``end``), ``forever`` (events every few ms until cancelled),
``wait`` (no answer until cancelled), ``close`` (closes the connection), ``unknown_id``
(answers for an id never sent), ``conn_error`` (a connection-level error, then a result).
Anything else gets ``unknown_method``. Methods in ``silent`` are never answered (until
cancelled); methods in ``drop`` make it close the connection.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from routerd_client import protocol as p
from routerd_client.framing import FrameParser, frame

STATUS: dict[str, Any] = {
    "version": "9.8.7",
    "pid": 4242,
    "started_at": 1_700_000_000.0,
    "uptime_s": 3 * 3600 + 4 * 60 + 5.5,
    "instance_id": "ab" * 16,
    "socket": "/run/routerd/routerd.sock",
    "config_path": "/etc/routerd/config.toml",
    "config_generation": 3,
    "last_reload": {"at": 1_700_000_100.0, "ok": True, "error": None},
    "connections": {"open": 1, "total": 12, "refused": 0},
    "requests": {"total": 40, "in_flight": 1, "failed": 2, "cancelled": 0},
    "errors": {"bad_request": 1, "unknown_method": 2},
    "methods": {"ping": 30, "status": 10},
    "components": {"serena": {"state": "running", "tools": 12}},
    "future_field": "ignored by old clients",
}

HELLO: dict[str, Any] = {
    "daemon": "routerd",
    "version": "9.8.7",
    "protocol": [1, 0],
    "instance_id": "ab" * 16,
    "capabilities": ["hello", "ping", "status", "config.reload"],
    "max_frame_size": p.DEFAULT_MAX_FRAME_SIZE,
}

_any = msgspec.msgpack.Decoder()


class _FakeConn:
    def __init__(self, daemon: FakeDaemon, sock: socket.socket) -> None:
        self.daemon = daemon
        self.sock = sock
        self.lock = threading.Lock()
        self.cancelled: set[int] = set()
        self.waiting: set[int] = set()
        self.closed = False

    def send(self, msg: Any) -> None:
        with self.lock:
            if not self.closed:
                try:
                    self.sock.sendall(frame(p.encode(msg)))
                except OSError:
                    self.closed = True

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(self) -> None:
        parser = FrameParser(p.DEFAULT_MAX_FRAME_SIZE)
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                parser.feed(data)
                for body in parser.frames():
                    self.handle(_any.decode(body))
        except OSError:
            pass
        finally:
            self.closed = True
            self.sock.close()

    def handle(self, msg: dict[str, Any]) -> None:
        self.daemon.received.append(msg)
        rid = msg.get("id")
        if msg.get("type") == "cancel":
            self.cancelled.add(rid)
            if rid in self.waiting:
                self.waiting.discard(rid)
                self.send(p.Error(id=rid, code="cancelled", message="request cancelled"))
            return
        method = msg.get("method")
        params = msg.get("params") or {}
        if method in self.daemon.silent:
            self.waiting.add(rid)
        elif method in self.daemon.drop:
            self.close()
        elif method == "hello":
            self.daemon.hellos.append(params)
            if params.get("protocol", [1, 0])[0] != 1:
                self.send(p.Error(id=rid, code="unsupported_version", message="speak 1.x"))
            else:
                self.send(p.Result(id=rid, result=HELLO))
        elif method == "ping":
            self.send(p.Result(id=rid, result={}))
        elif method == "status":
            self.send(p.Result(id=rid, result=self.daemon.status))
        elif method == "config.reload":
            if self.daemon.reload_error:
                self.send(p.Error(id=rid, code="bad_config", message=self.daemon.reload_error))
            else:
                self.send(p.Result(id=rid, result={"generation": 4, "config_path": None,
                                                   "changed": True}))
        elif method == "echo":
            self.send(p.Result(id=rid, result=params))
        elif method == "fail":
            self.send(p.Error(id=rid, code=params.get("code", "internal"), message="it failed",
                              data={"why": "asked"}))
        elif method == "count":
            for i in range(params.get("n", 3)):
                self.send(p.Event(id=rid, event="item", data={"i": i}))
            self.send(p.Event(id=rid, event="end", data={"total": params.get("n", 3)}))
        elif method == "forever":
            threading.Thread(target=self._forever, args=(rid,), daemon=True).start()
        elif method == "wait":
            self.waiting.add(rid)
        elif method == "close":
            self.close()
        elif method == "unknown_id":
            self.send(p.Result(id=rid + 1000, result={}))
        elif method == "conn_error":
            self.send(p.Error(id=None, code="bad_frame", message="could not decode a frame"))
            self.send(p.Result(id=rid, result="still here"))
        else:
            self.send(p.Error(id=rid, code="unknown_method", message=f"unknown method {method!r}"))

    def _forever(self, rid: int) -> None:
        i = 0
        while not self.closed:
            if rid in self.cancelled:
                self.send(p.Error(id=rid, code="cancelled", message="request cancelled"))
                return
            self.send(p.Event(id=rid, event="tick", data=i))
            i += 1
            time.sleep(0.002)


class FakeDaemon:
    """The fake daemon; ``path`` is its socket. ``received`` lists every decoded message."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.status: dict[str, Any] = dict(STATUS)
        self.reload_error: str | None = None
        self.silent: set[str] = set()  # methods never answered (until cancelled)
        self.drop: set[str] = set()  # methods answered by closing the connection
        self.received: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.conns: list[_FakeConn] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = _FakeConn(self, sock)
            self.conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def methods(self) -> list[str]:
        return [m["method"] for m in self.received if m.get("type") == "request"]

    def cancels(self) -> list[int]:
        return [m["id"] for m in self.received if m.get("type") == "cancel"]

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("fake daemon: condition not met in time")
            time.sleep(0.002)

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for conn in self.conns:
            conn.close()
        self._thread.join(timeout=5)


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short temporary directory: Unix socket paths must fit in 108 bytes."""
    path = tempfile.mkdtemp(prefix="rdc-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_daemon(short_tmp: str) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(os.path.join(short_tmp, "routerd.sock"))
    try:
        yield daemon
    finally:
        daemon.stop()
