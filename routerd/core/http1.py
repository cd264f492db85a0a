"""HTTP/1.1 for routerd's model calls, sans-IO: a request head out, a push parser for the answer.

The lean client (``routerd.shell.backends.wire``) sends one request at a time on a connection
and reads the answer as it comes. This module holds the bytes rules (RFC 9112) and no I/O.

Invariants:

* :func:`request_head` refuses (``HttpError``) a header name that is not a token, a value with
  a control character (CR, LF and NUL included) or a request target with a space or control
  character in it: nothing taken from the configuration can add a header or a request.
* :class:`ResponseParser` is a push parser: ``feed(bytes)`` as bytes arrive, ``feed_eof()``
  when the peer closed, then ``next_event()`` until ``NEED_DATA``. Its events depend only on the
  concatenated input, never on how it was split: one :class:`Head` (interim ``1xx`` answers
  skipped), body bytes, then ``END``, which repeats.
* Body framing is RFC 9112 section 6.3's, for a response to a POST: ``204`` and ``304`` have
  none; a ``Transfer-Encoding`` whose last coding is ``chunked`` is chunked (extensions and
  trailers read and dropped); any other ``Transfer-Encoding`` runs until the server closes;
  else ``Content-Length`` (repeated values must agree) counts it; else it runs until close.
* Malformed input raises ``HttpError`` from ``next_event``; the connection is then unusable.
  The head may take at most ``max_head`` bytes, a chunk-size line or the trailers 64 KiB.
  A connection closed before a single byte of the answer raises :class:`NoResponse` (the
  caller may retry a request sent on a connection reused from a pool).
* :attr:`ResponseParser.reusable` is true only once ``END`` came, the server did not ask to
  close (``Connection: close``, or HTTP/1.0 without ``keep-alive``), the body was not
  close-delimited, and no byte follows the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "END",
    "NEED_DATA",
    "Head",
    "HttpError",
    "NoResponse",
    "ResponseParser",
    "request_head",
]

#: The longest response head accepted (status line and headers), in bytes.
MAX_HEAD: Final = 64 * 1024
_MAX_LINE: Final = 64 * 1024  # a chunk-size line, and the trailers altogether

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET: Final = re.compile(rb"/[!-~]*")
_STATUS: Final = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: [^\x00\r\n]*)?[ ]?")
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_LINES: Final = re.compile(rb"\r?\n")
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HttpError(ValueError):
    """The bytes break HTTP/1.1 (or a request to send would)."""


class NoResponse(HttpError):
    """The connection closed before a single byte of the answer."""


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_event``: the body is complete (and will be again on every later call).
END: Final = _Marker("END")
#: ``next_event``: feed more bytes (or ``feed_eof``) first.
NEED_DATA: Final = _Marker("NEED_DATA")


class Head:
    """The status line and headers of an answer; header names lower-cased, in order."""

    __slots__ = ("headers", "status", "version")

    def __init__(self, status: int, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.version = version
        self.headers = headers

    def get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (lower case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self) -> str:
        return f"Head({self.status}, {self.version!r}, {self.headers!r})"


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """``METHOD target HTTP/1.1``, the headers and the blank line, as bytes (ASCII only).

    Raises HttpError for a method, target, header name or value that could change the
    request's meaning (see the module docstring).
    """
    try:
        m, t = method.encode("ascii"), target.encode("ascii")
        lines = [m, b" ", t, b" HTTP/1.1\r\n"]
        if _TOKEN.fullmatch(m) is None or _TARGET.fullmatch(t) is None:
            raise HttpError(f"invalid request line: {method} {target!r}")
        for name, value in headers:
            n, v = name.encode("ascii"), value.encode("ascii").strip(b" \t")
            if _TOKEN.fullmatch(n) is None:
                raise HttpError(f"invalid header name {name!r}")
            if _VALUE.fullmatch(v) is None:
                raise HttpError(f"invalid value for header {name}")
            lines += (n, b": ", v, b"\r\n")
    except UnicodeEncodeError as exc:
        raise HttpError(f"a request head must be ASCII: {exc}") from None
    lines.append(b"\r\n")
    return b"".join(lines)


# Parser states.
_S_HEAD, _S_LENGTH, _S_SIZE, _S_DATA, _S_DATA_END, _S_TRAILERS, _S_CLOSE, _S_END = range(8)


def _tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip().lower() for v in values for t in v.split(b",") if t.strip()]


class ResponseParser:
    """The answer to one request (see the module docstring). Use a new one per request."""

    __slots__ = ("_buf", "_eof", "_got", "_keep", "_left", "_max_head", "_state")

    def __init__(self, *, max_head: int = MAX_HEAD) -> None:
        self._buf = bytearray()
        self._eof = False
        self._got = False  # any byte at all
        self._keep = False  # the server keeps the connection open after this answer
        self._left = 0  # body bytes (or chunk bytes) still to come
        self._max_head = max_head
        self._state = _S_HEAD

    def feed(self, data: bytes) -> None:
        """Bytes as they arrived (``b""`` means nothing: use :meth:`feed_eof`)."""
        if data:
            self._buf += data
            self._got = True

    def feed_eof(self) -> None:
        """The peer closed the connection."""
        self._eof = True

    @property
    def started(self) -> bool:
        """At least one byte of the answer came."""
        return self._got

    @property
    def reusable(self) -> bool:
        """The connection may carry another request (see the module docstring)."""
        return self._state == _S_END and self._keep and not self._buf and not self._eof

    def next_event(self) -> Head | bytes | _Marker:
        """The next :class:`Head`, body bytes, ``END`` or ``NEED_DATA``; raises HttpError."""
        while True:
            state = self._state
            buf = self._buf
            if state in (_S_LENGTH, _S_DATA):
                if self._left == 0:
                    if state == _S_LENGTH:
                        self._state = _S_END
                        return END
                    self._state = _S_DATA_END
                    continue
                if not buf:
                    if self._eof:
                        raise HttpError(f"the connection closed {self._left} byte(s) short")
                    return NEED_DATA
                n = min(self._left, len(buf))
                data = bytes(buf) if n == len(buf) else bytes(buf[:n])
                del buf[:n]
                self._left -= n
                return data
            if state == _S_HEAD:
                head = self._head()
                if head is None:
                    return NEED_DATA
                if head.status >= 200:
                    return head
                continue  # an interim answer: the real one follows
            if state == _S_SIZE:
                line = self._line()
                if line is None:
                    return NEED_DATA
                size = line.split(b";", 1)[0].strip(b" \t")
                if _HEX.fullmatch(size) is None:
                    raise HttpError(f"invalid chunk size {bytes(size[:40])!r}")
                self._left = int(size, 16)
                self._state = _S_DATA if self._left else _S_TRAILERS
                continue
            if state == _S_DATA_END:
                line = self._line()
                if line is None:
                    return NEED_DATA
                if line:
                    raise HttpError("a chunk is longer than its size")
                self._state = _S_SIZE
                continue
            if state == _S_TRAILERS:
                line = self._line()
                if line is None:
                    return NEED_DATA
                if not line:
                    self._state = _S_END
                continue
            if state == _S_CLOSE:
                if buf:
                    data = bytes(buf)
                    buf.clear()
                    return data
                if self._eof:
                    self._state = _S_END
                    return END
                return NEED_DATA
            return END

    def _line(self) -> bytes | None:
        """The next line (without its end) of the chunked framing, or None for more data."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > _MAX_LINE:
                raise HttpError("a chunk-size line or the trailers are too long")
            if self._eof:
                raise HttpError("the connection closed in the middle of a chunked body")
            return None
        line = bytes(buf[: end - 1 if end and buf[end - 1] == 0x0D else end])
        del buf[: end + 1]
        return line

    def _head(self) -> Head | None:
        buf = self._buf
        while buf and buf[0] in (0x0D, 0x0A):  # stray line ends before the status line
            del buf[:1]
        m = _HEAD_END.search(buf)
        if m is None:
            if len(buf) > self._max_head:
                raise HttpError(f"the answer's head is over {self._max_head} bytes")
            if self._eof:
                if not self._got:
                    raise NoResponse("the connection closed before an answer")
                raise HttpError("the connection closed in the middle of the answer's head")
            return None
        if m.start() > self._max_head:
            raise HttpError(f"the answer's head is over {self._max_head} bytes")
        lines = _LINES.split(bytes(buf[: m.start()]))
        del buf[: m.end()]
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            raise HttpError(f"not an HTTP/1 status line: {lines[0][:60]!r}")
        major, minor, code = status.group(1), status.group(2), int(status.group(3))
        if major != b"1":
            raise HttpError(f"HTTP/{major.decode()} is not spoken here")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                raise HttpError(f"invalid header line {line[:60]!r}")
            value = value.strip(b" \t")
            if _VALUE.fullmatch(value) is None:
                raise HttpError(f"invalid value for header {name[:40]!r}")
            headers.append((name.lower(), value))
        head = Head(code, b"1." + minor, headers)
        if code < 200:
            if code == 101:
                raise HttpError("the server switched protocols")
            return head
        self._frame(head)
        return head

    def _frame(self, head: Head) -> None:
        """Choose the body framing and whether the connection stays open."""
        connection = _tokens([v for k, v in head.headers if k == b"connection"])
        if head.version == b"1.0":
            self._keep = b"keep-alive" in connection
        else:
            self._keep = b"close" not in connection
        if head.status in (204, 304):
            self._state, self._left = _S_LENGTH, 0
            return
        codings = _tokens([v for k, v in head.headers if k == b"transfer-encoding"])
        if codings:
            if codings[-1] == b"chunked":
                self._state = _S_SIZE
            else:
                self._state, self._keep = _S_CLOSE, False
            return
        lengths = {t for v in head.headers if v[0] == b"content-length" for t in _tokens([v[1]])}
        if not lengths:
            self._state, self._keep = _S_CLOSE, False
            return
        if len(lengths) > 1 or not all(x.isdigit() for x in lengths) or len(min(lengths)) > 18:
            raise HttpError(f"invalid Content-Length {b', '.join(sorted(lengths))[:60]!r}")
        self._state, self._left = _S_LENGTH, int(lengths.pop())
