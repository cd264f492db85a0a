"""Length-prefixed framing as a sans-IO push parser.

A frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes of body (one
msgpack map). Bytes go in with :meth:`FrameParser.feed` as they arrive, in pieces of any size;
whole frame bodies come out of :meth:`FrameParser.next_frame`, or :data:`NEED_DATA` when more
bytes are needed.

Invariants:

* The size limit is checked on the length prefix, before any body byte is buffered, so an
  oversize prefix costs no memory. After :class:`FrameTooLarge` the stream is out of sync and
  the parser refuses further input: the connection must be closed.
* A zero length is a protocol error (:class:`FrameTooSmall`): no valid body is empty.
* The parser never holds more than ``max_size + 4`` bytes of a frame in progress plus what the
  caller fed beyond it.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "NEED_DATA",
    "FrameError",
    "FrameTooLarge",
    "FrameTooSmall",
    "FrameParser",
    "frame",
    "PREFIX_SIZE",
]

PREFIX_SIZE: Final = 4
_prefix = struct.Struct(">I")


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`FrameParser.next_frame` when no whole frame is buffered.
NEED_DATA: Final[_NeedData] = _NeedData()


class FrameError(Exception):
    """The byte stream is not valid framing; the connection cannot continue."""


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameTooSmall(FrameError):
    def __init__(self) -> None:
        super().__init__("frame length is zero")


def frame(body: bytes) -> bytes:
    """Return ``body`` with its 4-byte big-endian length prefix."""
    return _prefix.pack(len(body)) + body


class FrameParser:
    """Push parser for length-prefixed frames.

    >>> p = FrameParser(max_size=1024)
    >>> p.feed(frame(b"\\x80")[:3]); p.next_frame()
    NEED_DATA
    >>> p.feed(frame(b"\\x80")[3:]); p.next_frame()
    b'\\x80'
    """

    __slots__ = ("_broken", "_buf", "_max", "_need", "_pos")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf
        self._need = -1  # body length of the frame in progress, or -1 before its prefix
        self._max = max_size
        self._broken: FrameError | None = None

    @property
    def max_size(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer. Raises the parser's earlier error if broken."""
        if self._broken is not None:
            raise self._broken
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_frame(self) -> bytes | _NeedData:
        """Return the next whole frame body, or :data:`NEED_DATA`.

        Raises :class:`FrameTooLarge` or :class:`FrameTooSmall` when the next prefix is
        invalid; the parser is then broken and every later call raises the same error.
        """
        if self._broken is not None:
            raise self._broken
        avail = len(self._buf) - self._pos
        if self._need < 0:
            if avail < PREFIX_SIZE:
                return NEED_DATA
            (size,) = _prefix.unpack_from(self._buf, self._pos)
            if size > self._max:
                self._broken = FrameTooLarge(size, self._max)
                self._buf = bytearray()
                self._pos = 0
                raise self._broken
            if size == 0:
                self._broken = FrameTooSmall()
                raise self._broken
            self._pos += PREFIX_SIZE
            avail -= PREFIX_SIZE
            self._need = size
        if avail < self._need:
            return NEED_DATA
        start = self._pos
        end = start + self._need
        body = bytes(self._buf[start:end])
        self._pos = end
        self._need = -1
        # Compact once the consumed head is large, to keep memory bounded by one frame.
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return body

    def frames(self) -> list[bytes]:
        """Return every whole frame body buffered now (possibly none)."""
        out: list[bytes] = []
        while True:
            f = self.next_frame()
            if f is NEED_DATA:
                return out
            assert isinstance(f, bytes)
            out.append(f)
