"""The blocking Client against the in-test fake daemon (a thread serving the real protocol)."""

from __future__ import annotations

import gc
import os
import socket
import threading
from typing import Any

import pytest

import routerd_client
from routerd_client import Client, errors
from routerd_client import protocol as p
from routerd_client._conn import StreamEvent


def test_connect_says_hello_with_client_and_agent(fake_daemon: Any) -> None:
    agent = p.AgentInfo(name="aider", type="cli", version="0.50")
    with Client(fake_daemon.path, client_name="tester", client_version="1.2", agent=agent) as c:
        assert c.hello_result is not None
        assert c.hello_result.version == "9.8.7"
        assert c.hello_result.protocol == (1, 0)
    (hello,) = fake_daemon.hellos
    assert hello == {
        "protocol": [1, 0],
        "client": {"name": "tester", "version": "1.2"},
        "agent": {"name": "aider", "type": "cli", "version": "0.50"},
    }


def test_hello_can_be_skipped(fake_daemon: Any) -> None:
    with Client(fake_daemon.path, hello=False) as c:
        assert c.hello_result is None
        assert c.ping() == p.PingResult()
    assert fake_daemon.methods() == ["ping"]


def test_typed_results(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        st = c.status()
        assert isinstance(st, p.StatusResult)
        assert st.pid == 4242 and st.config_generation == 3
        assert st.components == {"serena": {"state": "running", "tools": 12}}
        r = c.reload()
        assert r == p.ReloadResult(generation=4, config_path=None, changed=True)
        assert c.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert c.call("echo", {"generation": 1, "config_path": "x", "changed": False},
                      p.ReloadResult) == p.ReloadResult(1, "x", False)


def test_a_result_that_does_not_fit_is_a_protocol_violation(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        with pytest.raises(errors.ProtocolViolation, match=r"'echo'.*generation"):
            c.call("echo", {"generation": "three"}, p.ReloadResult)
        assert c.ping() == p.PingResult()  # the connection is fine


@pytest.mark.parametrize(("code", "exc"), [
    ("not_found", errors.NotFound),
    ("busy", errors.Busy),
    ("bad_config", errors.BadConfig),
    ("internal", errors.Internal),
    ("something_new", errors.RemoteError),
])
def test_error_replies_raise_mapped_exceptions(fake_daemon: Any, code: str, exc: type) -> None:
    with Client(fake_daemon.path) as c:
        with pytest.raises(exc) as info:
            c.call("fail", {"code": code})
        assert info.value.code == code
        assert info.value.message == "it failed"
        assert info.value.data == {"why": "asked"}
        assert c.ping() == p.PingResult()


def test_unknown_method_and_bad_config_reload(fake_daemon: Any) -> None:
    fake_daemon.reload_error = "/etc/routerd/config.toml: $.services: unknown field 'olama'"
    with Client(fake_daemon.path) as c:
        with pytest.raises(errors.UnknownMethod):
            c.call("no.such.method")
        with pytest.raises(errors.BadConfig, match="olama"):
            c.reload()


def test_stream_yields_events_then_stops_at_end(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        stream = c.stream("count", {"n": 4})
        events = list(stream)
        assert [e.data for e in events] == [{"i": i} for i in range(4)]
        assert all(isinstance(e, StreamEvent) and e.event == "item" for e in events)
        assert stream.end_data == {"total": 4}
        assert stream.done
        assert c.ping() == p.PingResult()
    assert fake_daemon.cancels() == []


def test_stream_error_is_raised(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c, pytest.raises(errors.UnknownMethod):
        list(c.stream("no.such.stream"))


def test_closing_a_stream_early_sends_cancel(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        with c.stream("forever") as stream:
            first = next(stream)
            assert first.event == "tick"
        fake_daemon.wait_for(lambda: stream.id in fake_daemon.cancels())
        # late ticks and the final "cancelled" are dropped; the connection keeps working
        for _ in range(3):
            assert c.ping() == p.PingResult()
        assert c._inbox == {}


def test_breaking_out_of_a_for_loop_cancels_the_stream(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        for event in c.stream("forever"):
            assert event.event == "tick"
            break
        gc.collect()
        fake_daemon.wait_for(lambda: len(fake_daemon.cancels()) == 1)
        assert c.ping() == p.PingResult()


def test_calls_interleave_with_an_open_stream(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c, c.stream("forever") as stream:
        next(stream)
        assert c.status().pid == 4242  # ticks arriving meanwhile are kept for the stream
        assert next(stream).event == "tick"


def test_call_on_a_streaming_method_raises_and_cancels(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        with pytest.raises(errors.ProtocolViolation, match="use stream"):
            c.call("forever")
        fake_daemon.wait_for(lambda: len(fake_daemon.cancels()) == 1)
        assert c.ping() == p.PingResult()


def test_stream_on_a_plain_method_ends_with_its_result(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        stream = c.stream("echo", {"x": 1})
        assert list(stream) == []
        assert stream.result == {"x": 1}


def test_timeout_cancels_the_request_and_keeps_the_connection(fake_daemon: Any) -> None:
    with Client(fake_daemon.path, timeout=5) as c:
        with pytest.raises(errors.RequestTimeout, match="'wait'") as info:
            c.call("wait", timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        fake_daemon.wait_for(lambda: len(fake_daemon.cancels()) == 1)
        assert c.ping() == p.PingResult()  # the late "cancelled" reply was dropped


def test_connection_lost_fails_the_call(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        with pytest.raises(errors.ConnectionLost, match="closed the connection"):
            c.call("close")
        with pytest.raises(errors.ConnectionLost):
            c.ping()


def test_connection_lost_during_a_stream(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c, c.stream("forever") as stream:
        next(stream)
        for conn in fake_daemon.conns:
            conn.close()
        with pytest.raises(errors.ConnectionLost):
            for _ in stream:
                pass


def test_frames_for_unknown_ids_are_protocol_violations(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        with pytest.raises(errors.ProtocolViolation, match="not in flight"):
            c.call("unknown_id")
        assert c.closed
        with pytest.raises(errors.ProtocolViolation):
            c.ping()


def test_connection_level_errors_are_kept(fake_daemon: Any) -> None:
    with Client(fake_daemon.path) as c:
        assert c.call("conn_error") == "still here"
        (err,) = c.connection_errors
        assert isinstance(err, errors.BadFrame)


def test_using_a_closed_client_raises_connection_lost(fake_daemon: Any) -> None:
    c = Client(fake_daemon.path)
    c.close()
    c.close()
    with pytest.raises(errors.ConnectionLost, match="client closed"):
        c.ping()


def test_unsupported_version_closes_and_raises(fake_daemon: Any) -> None:
    with Client(fake_daemon.path, hello=False) as c, pytest.raises(errors.UnsupportedVersion):
        c.call("hello", p.HelloParams(protocol=(2, 0)))


# --- unreachable daemons ---------------------------------------------------------------------

def test_missing_socket_file(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "nothing.sock")
    with pytest.raises(errors.DaemonUnreachable) as info:
        Client(path)
    assert info.value.path == path
    assert info.value.reason == "no such file"


def test_missing_directory(short_tmp: str) -> None:
    with pytest.raises(errors.DaemonUnreachable, match="does not exist"):
        Client(os.path.join(short_tmp, "nodir", "x.sock"))


def test_refused_when_nobody_listens(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening: a stale socket file
    try:
        with pytest.raises(errors.DaemonUnreachable, match="connection refused"):
            Client(path)
    finally:
        s.close()


def test_not_a_socket(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "plain")
    with open(path, "w") as f:
        f.write("x")
    with pytest.raises(errors.DaemonUnreachable) as info:
        Client(path)
    assert info.value.reason == "not a socket"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied(fake_daemon: Any) -> None:
    os.chmod(fake_daemon.path, 0)
    with pytest.raises(errors.DaemonUnreachable) as info:
        Client(fake_daemon.path)
    assert info.value.reason == "permission denied"


def test_default_path_comes_from_the_environment(
    fake_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTERD_SOCKET", fake_daemon.path)
    with Client() as c:
        assert c.path == fake_daemon.path
        assert c.ping() == p.PingResult()


def test_one_client_per_thread(fake_daemon: Any) -> None:
    results: list[int] = []

    def work() -> None:
        with Client(fake_daemon.path) as c:
            results.extend(c.status().pid for _ in range(20))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [4242] * 80


def test_package_surface() -> None:
    assert routerd_client.Client is Client
    assert issubclass(routerd_client.RequestTimeout, routerd_client.RouterdError)
    assert "AsyncClient" in routerd_client.__all__
