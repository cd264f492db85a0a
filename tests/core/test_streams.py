"""SSE and NDJSON push parsers: every framing quirk, and any chunking gives the same output."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.streams import (
    STREAM_ERROR_KINDS,
    Chunk,
    LineTooLong,
    NdjsonParser,
    SseMessage,
    SseParser,
    StreamError,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "servers"


def feed_all(parser: SseParser | NdjsonParser, pieces: list[bytes]) -> list[object]:
    """Feed ``pieces`` in order, then close: everything the parser gave."""
    out: list[object] = []
    for piece in pieces:
        out += parser.feed(piece)
    out += parser.close()
    return out


def steps(body: bytes, step: int | None) -> list[bytes]:
    if step is None:
        return [body]
    return [body[i : i + step] for i in range(0, len(body), step)]


def sse_all(body: bytes, *, step: int | None = None, max_line: int = 1 << 20) -> list[object]:
    """Parse ``body`` fed in pieces of ``step`` bytes (whole when None), then close."""
    return feed_all(SseParser(max_line=max_line), steps(body, step))


def ndjson_all(body: bytes, *, step: int | None = None, max_line: int = 1 << 20) -> list[object]:
    return feed_all(NdjsonParser(max_line=max_line), steps(body, step))


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(body[last:p])
        last = p
    pieces.append(body[last:])
    return pieces


# --- SSE -------------------------------------------------------------------------------------


def test_sse_data_with_and_without_space_after_colon() -> None:
    body = b'data: {"a":1}\n\ndata:{"b":2}\n\ndata:  two spaces\n\n'
    assert sse_all(body) == [
        SseMessage('{"a":1}'),
        SseMessage('{"b":2}'),
        SseMessage(" two spaces"),  # only one space is removed
    ]


def test_sse_multiline_data_is_joined_with_newlines() -> None:
    assert sse_all(b"data: one\ndata: two\ndata:\n\n") == [SseMessage("one\ntwo\n")]


def test_sse_comments_ids_retry_and_unknown_fields_are_ignored() -> None:
    body = b": keep-alive\nid: 7\nretry: 100\nfoo: bar\ndata: x\n\n:\n\n"
    assert sse_all(body) == [SseMessage("x")]


def test_sse_event_field_names_the_event_and_resets_after_dispatch() -> None:
    body = b"event: message\ndata: {}\n\ndata: y\n\n"
    assert sse_all(body) == [SseMessage("{}", "message"), SseMessage("y", "message")]
    assert sse_all(b"event: ping\ndata: 1\n\n") == [SseMessage("1", "ping")]


def test_sse_crlf_cr_and_lf_line_ends_are_equivalent() -> None:
    expected = [SseMessage("a\nb"), SseMessage("c")]
    assert sse_all(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n") == expected
    assert sse_all(b"data: a\rdata: b\r\rdata: c\r\r") == expected
    assert sse_all(b"data: a\ndata: b\n\ndata: c\n\n") == expected


def test_sse_crlf_split_between_feeds_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SseMessage("a")]
    assert parser.feed(b"\ndata: b\n\n") == [SseMessage("b")]


def test_sse_event_without_data_is_dropped() -> None:
    assert sse_all(b"event: x\n\n\n\n") == []


def test_sse_leading_bom_is_skipped() -> None:
    assert sse_all(b"\xef\xbb\xbfdata: x\n\n", step=1) == [SseMessage("x")]


def test_sse_close_dispatches_unterminated_last_event() -> None:
    # Kobold.cpp writes its last ``data: [DONE]`` with no newline at all.
    assert sse_all(b"data: 1\n\ndata: [DONE]") == [SseMessage("1"), SseMessage("[DONE]")]
    assert sse_all(b"data: 1\n") == [SseMessage("1")]


def test_sse_multibyte_characters_split_across_feeds() -> None:
    body = "data: héllo — 漢字 🙂\n\n".encode()
    assert sse_all(body, step=1) == [SseMessage("héllo — 漢字 🙂")]


def test_sse_invalid_utf8_is_replaced_not_raised() -> None:
    assert sse_all(b"data: \xff\xfe\n\n") == [SseMessage("\ufffd\ufffd")]


def test_sse_line_too_long_stops_the_parser_whatever_the_chunking() -> None:
    body = b"data: ok\n\ndata: " + b"x" * 100 + b"\n\ndata: after\n\n"
    expected = [SseMessage("ok"), LineTooLong(50)]
    assert sse_all(body, max_line=50) == expected
    assert sse_all(body, step=1, max_line=50) == expected
    assert sse_all(body, step=7, max_line=50) == expected


def test_real_captures_parse_the_same_byte_by_byte() -> None:
    for name in ("llama-cpp-python/chat_stream.body", "llama-server/chat_stream_usage.body"):
        body = (DATA / name).read_bytes()
        whole = sse_all(body)
        assert whole == sse_all(body, step=1)
        assert isinstance(whole[-1], SseMessage)
        assert whole[-1].data == "[DONE]"
        assert len(whole) > 30


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_sse_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    body = (DATA / "llama-server" / "chat_stream_usage.body").read_bytes()
    body = body.replace(b"\n", b"\r\n")[:3000] + b": comment\rdata: last\r"
    assert feed_all(SseParser(), split_at(body, cuts)) == sse_all(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_sse_garbage_never_raises_and_chunking_does_not_matter(
    body: bytes, cuts: list[int]
) -> None:
    out = feed_all(SseParser(max_line=64), split_at(body, cuts))
    assert out == sse_all(body, max_line=64)
    assert all(isinstance(item, SseMessage | LineTooLong) for item in out)


# --- NDJSON ----------------------------------------------------------------------------------


def test_ndjson_lines_blank_lines_and_crlf() -> None:
    body = b'{"a":1}\n\n{"b":2}\r\n   \n{"c":3}'
    assert ndjson_all(body) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert ndjson_all(body, step=1) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_ndjson_line_too_long() -> None:
    body = b'{"a":1}\n' + b"9" * 80 + b'\n{"b":2}\n'
    assert ndjson_all(body, max_line=40) == [b'{"a":1}', LineTooLong(40)]
    assert ndjson_all(body, step=3, max_line=40) == [b'{"a":1}', LineTooLong(40)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_ndjson_any_chunking_gives_the_same_lines(body: bytes, cuts: list[int]) -> None:
    out = feed_all(NdjsonParser(max_line=50), split_at(body, cuts))
    assert out == ndjson_all(body, max_line=50)


# --- Events ----------------------------------------------------------------------------------


def test_error_kinds_are_listed_and_events_are_tagged_structs() -> None:
    assert "context_overflow" in STREAM_ERROR_KINDS
    assert "empty_stream" in STREAM_ERROR_KINDS
    assert len(set(STREAM_ERROR_KINDS)) == len(STREAM_ERROR_KINDS)
    assert StreamError("truncated", "x").status is None
    assert Chunk("a") == Chunk("a")
