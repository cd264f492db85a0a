"""The HTTP/1.1 codec of the lean model client: request heads, and the answer parser fed whole,
one byte at a time and in random pieces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.http1 import (
    END,
    NEED_DATA,
    Head,
    HttpError,
    NoResponse,
    ResponseParser,
    request_head,
)


def parse(pieces: list[bytes], eof: bool = False) -> tuple[Head, bytes, ResponseParser]:
    """Feed ``pieces`` one by one (then EOF); return the head, the body and the parser."""
    p = ResponseParser()
    head: Head | None = None
    body = b""
    ended = False
    for piece in [*pieces, None]:
        if piece is None:
            if not eof:
                break
            p.feed_eof()
        else:
            p.feed(piece)
        while True:
            ev = p.next_event()
            if ev is NEED_DATA:
                break
            if ev is END:
                ended = True
                break
            if isinstance(ev, Head):
                assert head is None, "two heads"
                head = ev
            else:
                assert head is not None and isinstance(ev, bytes)
                body += ev
        if ended:
            break
    assert head is not None and ended, (head, body)
    return head, body, p


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"6\r\ndata: \r\n"
    b"1A;ext=1\r\n" + b"x" * 26 + b"\r\n"
    b"0\r\nTrailer-One: a\r\n\r\n"
)


@pytest.mark.parametrize("split", [False, True])
def test_chunked_with_extensions_and_trailers(split: bool) -> None:
    head, body, p = parse(bytewise(CHUNKED) if split else [CHUNKED])
    assert head.status == 200 and head.get(b"content-type") == b"text/event-stream"
    assert body == b"data: " + b"x" * 26
    assert p.reusable


def test_content_length_keep_alive_and_what_follows() -> None:
    raw = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello"
    head, body, p = parse([raw])
    assert (head.status, body, p.reusable) == (201, b"hello", True)
    # A byte after the answer: the connection is out of step, not reusable.
    _, _, p = parse([raw + b"X"])
    assert not p.reusable


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Upgrade\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_who_keeps_the_connection(head: bytes, reusable: bool) -> None:
    assert parse([head])[2].reusable is reusable


def test_close_delimited_body_ends_at_eof_and_is_not_reusable() -> None:
    _, body, p = parse([b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"], eof=True)
    assert body == b"all of it" and not p.reusable


def test_unknown_transfer_coding_runs_to_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef"
    _, body, p = parse([raw], eof=True)
    assert body == b"abcdef" and not p.reusable


def test_interim_answers_are_skipped_and_no_body_statuses() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"
    head, body, p = parse(bytewise(raw))
    assert (head.status, body, p.reusable) == (204, b"", True)


def test_tolerated_spellings() -> None:
    # Bare LF line ends, no reason phrase, a stray CRLF before the status line, repeated
    # identical lengths, tabs around a value.
    raw = b"\r\nHTTP/1.1 200\nContent-Length: 2, 2\nX-A:\t v \t\n\nok"
    head, body, _ = parse(bytewise(raw))
    assert head.status == 200 and body == b"ok" and head.get(b"x-a") == b"v"


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_malformed_answers_raise(raw: bytes) -> None:
    p = ResponseParser()
    p.feed(raw)
    with pytest.raises(HttpError):
        while p.next_event() is not NEED_DATA:
            pass


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", NoResponse),
        (b"HTTP/1.1 200 OK\r\n", HttpError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", HttpError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", HttpError),
    ],
)
def test_eof_too_early(raw: bytes, error: type[HttpError]) -> None:
    p = ResponseParser()
    p.feed(raw)
    p.feed_eof()
    with pytest.raises(error) as caught:
        while p.next_event() is not END:
            pass
    assert (type(caught.value) is NoResponse) is (error is NoResponse)
    assert p.started is bool(raw)


def test_limits() -> None:
    p = ResponseParser(max_head=100)
    p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200)
    with pytest.raises(HttpError, match="head"):
        p.next_event()
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(p.next_event(), Head)
    p.feed(b"1" * (65 * 1024))
    with pytest.raises(HttpError):
        p.next_event()


@given(st.data())
def test_any_split_gives_the_same_events(data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(CHUNKED)), max_size=12)))
    pieces = [CHUNKED[a:b] for a, b in zip([0, *cuts], [*cuts, len(CHUNKED)], strict=True)]
    head, body, p = parse(pieces)
    assert head.status == 200 and body == b"data: " + b"x" * 26 and p.reusable


def test_request_head() -> None:
    head = request_head("POST", "/v1/chat?x=1", [("Host", "h:1"), ("Content-Type", " a/b ")])
    assert head == b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: h:1\r\nContent-Type: a/b\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a b", []),
        ("no-slash", []),
        ("/", [("X", "a\r\nInjected: 1")]),
        ("/", [("X\r\nY", "1")]),
        ("/", [("X", "a\x00")]),
        ("/", [("X", "é")]),
        ("/", [("", "v")]),
    ],
)
def test_request_head_refuses_what_would_change_the_request(
    target: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(HttpError):
        request_head("POST", target, headers)
