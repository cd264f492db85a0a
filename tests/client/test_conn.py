"""The sans-IO client connection: ids, events, violations, closure; fed bytes every way."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd_client import errors
from routerd_client import protocol as p
from routerd_client._conn import (
    ClientConnection,
    ConnectionBroken,
    ConnectionErrorEvent,
    ConnEvent,
    ErrorReply,
    Reply,
    StreamEnd,
    StreamEvent,
)
from routerd_client.framing import FrameParser, frame

_any = msgspec.msgpack.Decoder()


def sent(data: bytes) -> dict[str, Any]:
    """Decode one framed client message."""
    parser = FrameParser(p.DEFAULT_MAX_FRAME_SIZE)
    parser.feed(data)
    (body,) = parser.frames()
    decoded: dict[str, Any] = _any.decode(body)
    return decoded


def wire(*msgs: Any) -> bytes:
    return b"".join(frame(p.encode(m)) for m in msgs)


def test_request_allocates_distinct_ids_and_encodes_the_message() -> None:
    conn = ClientConnection()
    id1, data1 = conn.request("ping")
    id2, data2 = conn.request("echo", {"a": 1})
    assert id1 != id2
    assert sent(data1) == {"type": "request", "id": id1, "method": "ping"}
    assert sent(data2) == {"type": "request", "id": id2, "method": "echo", "params": {"a": 1}}
    assert conn.pending == {id1, id2}
    assert conn.method_of(id2) == "echo"


def test_struct_params_are_encoded_as_maps() -> None:
    conn = ClientConnection()
    _rid, data = conn.request("hello", p.HelloParams(agent=p.AgentInfo(name="aider", type="cli")))
    msg = sent(data)
    assert msg["params"]["agent"] == {"name": "aider", "type": "cli"}
    assert msg["params"]["protocol"] == [1, 0]


def test_every_final_frame_kind_ends_its_request() -> None:
    conn = ClientConnection()
    a, _ = conn.request("ping")
    b, _ = conn.request("fail")
    c, _ = conn.request("count")
    events = conn.receive_data(wire(
        p.Result(id=a, result={"x": 1}),
        p.Error(id=b, code="not_found", message="nope", data={"k": "v"}),
        p.Event(id=c, event="item", data=1),
        p.Event(id=c, event="end", data={"n": 1}),
    ))
    assert events[0] == Reply(a, {"x": 1})
    assert isinstance(events[1], ErrorReply) and events[1].id == b
    err = events[1].error
    assert isinstance(err, errors.NotFound)
    assert (err.code, err.message, err.data) == ("not_found", "nope", {"k": "v"})
    assert events[2] == StreamEvent(c, "item", 1)
    assert events[3] == StreamEnd(c, {"n": 1})
    assert conn.pending == frozenset()
    assert not conn.closed


def test_unknown_error_codes_map_to_plain_remote_error() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("x")
    (ev,) = conn.receive_data(wire(p.Error(id=rid, code="from_the_future", message="m")))
    assert isinstance(ev, ErrorReply)
    assert type(ev.error) is errors.RemoteError
    assert ev.error.code == "from_the_future"


def test_ids_are_reusable_after_their_final_frame_only() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("ping")
    conn.receive_data(wire(p.Result(id=rid, result={})))
    assert not conn.is_pending(rid)
    # many requests in flight never share an id
    ids = [conn.request("ping")[0] for _ in range(100)]
    assert len(set(ids)) == 100


def test_id_allocation_wraps_and_skips_ids_in_flight() -> None:
    conn = ClientConnection()
    conn._next_id = p.MAX_ID - 1
    last, _ = conn.request("a")
    assert last == p.MAX_ID - 1
    first, _ = conn.request("b")
    assert first == 0
    conn._next_id = 0  # 0 is in flight: the next id must skip it
    nxt, _ = conn.request("c")
    assert nxt == 1


def test_cancel_frames_only_for_requests_in_flight() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("wait")
    assert sent(conn.cancel(rid)) == {"type": "cancel", "id": rid}
    # cancelling does not end the request: its final frame still comes
    assert conn.is_pending(rid)
    (ev,) = conn.receive_data(wire(p.Error(id=rid, code="cancelled", message="c")))
    assert isinstance(ev, ErrorReply) and isinstance(ev.error, errors.Cancelled)
    assert conn.cancel(rid) == b""
    assert conn.cancel(12345) == b""


def test_connection_level_errors_surface_without_ending_requests() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("ping")
    events = conn.receive_data(wire(p.Error(id=None, code="bad_frame", message="garbage")))
    assert len(events) == 1
    assert isinstance(events[0], ConnectionErrorEvent)
    assert isinstance(events[0].error, errors.BadFrame)
    assert conn.is_pending(rid)


def test_connection_closed_fails_everything_in_flight() -> None:
    conn = ClientConnection()
    a, _ = conn.request("ping")
    b, _ = conn.request("count")
    conn.receive_data(wire(p.Error(id=None, code="busy", message="too many connections")))
    events = conn.connection_closed()
    assert {e.id for e in events if isinstance(e, ErrorReply)} == {a, b}
    for e in events:
        assert isinstance(e, ErrorReply) and isinstance(e.error, errors.ConnectionLost)
        assert "busy: too many connections" in str(e.error)
    assert events[0].error is not events[1].error  # type: ignore[union-attr]
    assert conn.closed
    assert conn.connection_closed() == []
    assert conn.receive_data(wire(p.Result(id=a, result={}))) == []
    with pytest.raises(errors.ConnectionLost):
        conn.request("ping")


def test_empty_data_means_end_of_file() -> None:
    conn = ClientConnection()
    _rid, _ = conn.request("ping")
    (ev,) = conn.receive_data(b"")
    assert isinstance(ev, ErrorReply) and isinstance(ev.error, errors.ConnectionLost)
    assert conn.closed


def test_eof_in_the_middle_of_a_frame_says_so() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("ping")
    conn.receive_data(wire(p.Result(id=rid, result={}))[:-2])
    (ev,) = conn.connection_closed()
    assert isinstance(ev, ErrorReply)
    assert "in the middle of a frame" in str(ev.error)


def test_client_close_reason_is_used() -> None:
    conn = ClientConnection()
    _rid, _ = conn.request("ping")
    (ev,) = conn.connection_closed("the client closed the connection")
    assert isinstance(ev, ErrorReply)
    assert str(ev.error) == "the client closed the connection"


def _broken(events: list[ConnEvent]) -> errors.ProtocolViolation:
    assert isinstance(events[-1], ConnectionBroken)
    return events[-1].error


def test_frame_for_an_id_never_sent_breaks_the_connection() -> None:
    conn = ClientConnection()
    a, _ = conn.request("ping")
    b, _ = conn.request("wait")
    events = conn.receive_data(wire(p.Result(id=a, result={}), p.Result(id=999, result={})))
    # the valid frame before the bad one is still delivered
    assert events[0] == Reply(a, {})
    assert isinstance(events[1], ErrorReply) and events[1].id == b
    assert isinstance(events[1].error, errors.ProtocolViolation)
    assert "999" in str(_broken(events))
    assert conn.closed
    with pytest.raises(errors.ProtocolViolation):
        conn.request("ping")


def test_frame_after_the_final_frame_breaks_the_connection() -> None:
    conn = ClientConnection()
    rid, _ = conn.request("count")
    events = conn.receive_data(wire(
        p.Event(id=rid, event="end"), p.Event(id=rid, event="item", data=1)
    ))
    assert events[0] == StreamEnd(rid, None)
    assert "not in flight" in str(_broken(events))


def test_undecodable_message_breaks_the_connection() -> None:
    conn = ClientConnection()
    conn.request("ping")
    events = conn.receive_data(frame(msgspec.msgpack.encode({"type": "nonsense", "id": 1})))
    assert isinstance(events[0], ErrorReply)
    _broken(events)
    conn2 = ClientConnection()
    events = conn2.receive_data(frame(b"\xc1"))  # 0xc1 is never valid msgpack
    _broken(events)


def test_oversize_frame_breaks_the_connection_before_buffering() -> None:
    conn = ClientConnection(max_frame_size=100)
    conn.request("ping")
    events = conn.receive_data((101).to_bytes(4, "big") + b"x" * 10)
    assert "exceeds" in str(_broken(events))
    assert ClientConnection().receive_data(b"\x00\x00\x00\x00")[-1].__class__ is ConnectionBroken


def test_request_over_the_daemon_limit_is_refused_before_an_id_is_used() -> None:
    conn = ClientConnection()
    conn.max_send_size = 64
    with pytest.raises(ValueError, match="at most 64"):
        conn.request("echo", {"blob": "x" * 100})
    assert conn.pending == frozenset()


# --- bytes in any chunking give the same events ----------------------------------------------

def _scenario() -> tuple[ClientConnection, bytes]:
    conn = ClientConnection()
    ids = [conn.request(m)[0] for m in ("ping", "fail", "count", "status")]
    stream = wire(
        p.Event(id=ids[2], event="item", data={"text": "héllo"}),
        p.Error(id=None, code="bad_frame", message="x"),
        p.Result(id=ids[0], result={}),
        p.Event(id=ids[2], event="item", data=[1, 2, 3]),
        p.Error(id=ids[1], code="busy", message="slow down"),
        p.Result(id=ids[3], result={"big": "y" * 5000}),
        p.Event(id=ids[2], event="end", data=None),
    )
    return conn, stream


def _summary(events: list[ConnEvent]) -> list[Any]:
    out: list[Any] = []
    for e in events:
        if isinstance(e, ErrorReply):
            out.append(("error", e.id, type(e.error), str(e.error)))
        elif isinstance(e, ConnectionErrorEvent):
            out.append(("conn", str(e.error)))
        else:
            out.append(e)
    return out


def _whole() -> list[Any]:
    conn, stream = _scenario()
    return _summary(conn.receive_data(stream))


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    expected = _whole()
    assert len(expected) == 7
    conn, stream = _scenario()
    events: list[ConnEvent] = []
    for i in range(len(stream)):
        events.extend(conn.receive_data(stream[i : i + 1]))
    assert _summary(events) == expected
    assert conn.pending == frozenset()


@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    expected = _whole()
    conn, stream = _scenario()
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=40)))
    events: list[ConnEvent] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        if cut > start:
            events.extend(conn.receive_data(memoryview(stream)[start:cut]))
            start = cut
    assert _summary(events) == expected


# --- every message type round-trips through the protocol's encode/decode ---------------------

_client_decoder = msgspec.msgpack.Decoder(p.ClientMessage)

DAEMON_MESSAGES: list[p.DaemonMessage] = [
    p.Result(id=0, result={}),
    p.Result(id=p.MAX_ID - 1, result=[1, "two", None, {"3": 4.5}]),
    p.Error(id=None, code="bad_frame", message="m"),
    p.Error(id=5, code="busy", message="m", data={"limit": 64}),
    p.Event(id=6, event="chunk", data={"text": "ünïcode"}),
    p.Event(id=6, event="end"),
]
CLIENT_MESSAGES: list[p.ClientMessage] = [
    p.Request(id=1, method="ping"),
    p.Request(id=2, method="echo", params={"nested": {"list": [1, 2]}}),
    p.Cancel(id=3),
]
METHOD_TYPES: list[msgspec.Struct] = [
    p.HelloParams(),
    p.HelloParams(protocol=(1, 7), client=p.ClientInfo("routerctl", "0.1.0"),
                  agent=p.AgentInfo("aider", "cli", "0.50.1")),
    p.HelloResult("routerd", "1.0", (1, 0), "ff" * 16, ["ping"], 1024),
    p.PingResult(),
    p.StatusResult(version="1", pid=1, started_at=1.5, uptime_s=2.5, instance_id="x", socket="s",
                   config_path=None, config_generation=1, last_reload=None,
                   connections={"open": 1}, requests={"total": 1}, errors={}, methods={},
                   components={"serena": {"state": "warm"}}),
    p.ReloadResult(generation=2, config_path="/etc/routerd/config.toml", changed=False),
    p.EmptyParams(),
]


@pytest.mark.parametrize("msg", DAEMON_MESSAGES, ids=repr)
def test_daemon_messages_round_trip(msg: p.DaemonMessage) -> None:
    assert p.decode_daemon_message(p.encode(msg)) == msg


@pytest.mark.parametrize("msg", CLIENT_MESSAGES, ids=repr)
def test_client_messages_round_trip(msg: p.ClientMessage) -> None:
    assert _client_decoder.decode(p.encode(msg)) == msg


@pytest.mark.parametrize("value", METHOD_TYPES, ids=lambda v: type(v).__name__)
def test_method_structs_round_trip(value: msgspec.Struct) -> None:
    assert p.decode_params(p.encode(value), type(value)) == value
    # and through the builtins a client sees before typed_result converts them
    builtins = msgspec.msgpack.decode(p.encode(value))
    assert msgspec.convert(builtins, type(value)) == value


def test_empty_array_params_count_as_an_empty_map() -> None:
    assert p.decode_params(b"\x90", p.HelloParams) == p.HelloParams()
