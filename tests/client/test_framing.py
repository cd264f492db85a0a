"""The frame push parser, fed every way bytes can arrive."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd_client import protocol as p
from routerd_client.framing import (
    NEED_DATA,
    FrameParser,
    FrameTooLarge,
    FrameTooSmall,
    frame,
)

MESSAGES: list[object] = [
    p.Request(id=0, method="ping"),
    p.Request(id=2**53 - 1, method="status", params={"a": [1, 2], "b": {"c": None}}),
    p.Cancel(id=7),
    p.Result(id=1, result={}),
    p.Result(id=1, result=None),
    p.Error(id=None, code=p.ErrorCode.BAD_FRAME, message="not msgpack"),
    p.Error(id=3, code=p.ErrorCode.BUSY, message="too many", data={"limit": 64}),
    p.Event(id=4, event="chunk", data={"text": "héllo"}),
    p.Event(id=4, event=p.END_EVENT),
]


def test_one_byte_at_a_time() -> None:
    bodies = [p.encode(m) for m in MESSAGES]
    stream = b"".join(frame(b) for b in bodies)
    parser = FrameParser(max_size=1024)
    out: list[bytes] = []
    for i in range(len(stream)):
        parser.feed(stream[i : i + 1])
        out.extend(parser.frames())
    assert out == bodies
    assert parser.buffered == 0
    assert parser.next_frame() is NEED_DATA


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.data())
def test_any_chunking_gives_the_same_frames(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    parser = FrameParser(max_size=300)
    out: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        parser.feed(stream[prev:c])
        prev = c
        out.extend(parser.frames())
    assert out == bodies


def test_oversize_prefix_is_refused_before_buffering() -> None:
    parser = FrameParser(max_size=100)
    parser.feed(struct.pack(">I", 101))
    with pytest.raises(FrameTooLarge) as info:
        parser.next_frame()
    assert info.value.size == 101 and info.value.limit == 100
    assert parser.buffered == 0
    # The stream is out of sync: the parser stays broken.
    with pytest.raises(FrameTooLarge):
        parser.feed(b"x")


def test_exact_limit_is_accepted() -> None:
    parser = FrameParser(max_size=5)
    parser.feed(frame(b"12345"))
    assert parser.next_frame() == b"12345"


def test_zero_length_is_an_error() -> None:
    parser = FrameParser(max_size=100)
    parser.feed(b"\x00\x00\x00\x00")
    with pytest.raises(FrameTooSmall):
        parser.next_frame()


def test_truncated_frame_waits() -> None:
    parser = FrameParser(max_size=100)
    parser.feed(frame(b"abcdef")[:-1])
    assert parser.next_frame() is NEED_DATA
    parser.feed(b"f")
    assert parser.next_frame() == b"abcdef"


def test_large_stream_memory_stays_bounded() -> None:
    parser = FrameParser(max_size=70_000)
    body = b"x" * 60_000
    for _ in range(50):
        parser.feed(frame(body))
        assert parser.next_frame() == body
    assert parser.buffered == 0


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(msg: object) -> None:
    body = p.encode(msg)
    if isinstance(msg, p.Request | p.Cancel):
        decoded = msgspec.msgpack.decode(body, type=p.ClientMessage)
    else:
        decoded = p.decode_daemon_message(body)
    assert decoded == msg


def test_envelope_keeps_params_raw() -> None:
    body = p.encode(p.Request(id=5, method="x", params={"k": 1}))
    env = msgspec.msgpack.decode(body, type=p.Envelope)
    assert (env.type, env.id, env.method) == ("request", 5, "x")
    assert msgspec.msgpack.decode(env.params) == {"k": 1}


class _Inner(msgspec.Struct):
    opts: dict[str, int] = {}


class _Params(msgspec.Struct):
    count: int = 0
    inner: _Inner | None = None
    tags: list[str] = []
    table: dict[str, _Inner] = {}


def test_empty_array_accepted_where_a_map_is_expected() -> None:
    assert p.decode_params(b"\x90", _Params) == _Params()
    raw = p.encode({"inner": [], "tags": [], "table": {"a": {"opts": []}}})
    got = p.decode_params(raw, _Params)
    assert got == _Params(inner=_Inner(), tags=[], table={"a": _Inner()})


def test_bad_params_name_the_field() -> None:
    with pytest.raises(p.ParamsError, match=r"\$\.count"):
        p.decode_params(p.encode({"count": "x"}), _Params)
    with pytest.raises(p.ParamsError):
        p.decode_params(b"\xc1", _Params)


def test_unknown_fields_are_ignored() -> None:
    assert p.decode_params(p.encode({"count": 2, "future": True}), _Params) == _Params(count=2)
    msg = p.decode_daemon_message(p.encode({"type": "result", "id": 1, "result": 1, "new": 2}))
    assert msg == p.Result(id=1, result=1)


def test_ids_must_stay_below_2_53() -> None:
    with pytest.raises(msgspec.ValidationError):
        p.decode_daemon_message(p.encode({"type": "result", "id": 2**53, "result": 1}))
