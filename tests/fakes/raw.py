"""A raw HTTP/1.1 client for byte-level checks of the fakes (status line, header order).

``await raw_request(base_url, "GET", "/health")`` sends one request (keep-alive, like curl)
and returns ``RawResponse(head, body)`` with the body de-chunked; ``chunks`` keeps each
chunk as the server wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

__all__ = ["RawResponse", "raw_request"]


@dataclass
class RawResponse:
    head: bytes
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    @property
    def header_lines(self) -> list[str]:
        """Header lines after the status line, exactly as sent."""
        return self.head.decode("latin-1").split("\r\n")[1:]

    @property
    def headers(self) -> list[tuple[str, str]]:
        out = []
        for line in self.header_lines:
            name, _, value = line.partition(":")
            out.append((name, value[1:] if value.startswith(" ") else value))
        return out

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def _read_until(stream: trio.SocketStream, buf: bytearray, marker: bytes) -> int:
    while (at := buf.find(marker)) < 0:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed before {marker!r}; got {bytes(buf)[:200]!r}")
        buf += data
    return at


async def _read_exactly(stream: trio.SocketStream, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed with {len(buf)} of {n} bytes")
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


async def raw_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> RawResponse:
    """One request on a fresh connection; the whole answer (de-chunked)."""
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.hostname}:{url.port}", "Accept: */*"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    async with stream:
        await stream.send_all(request)
        buf = bytearray()
        end = await _read_until(stream, buf, b"\r\n\r\n")
        head = bytes(buf[:end])
        del buf[: end + 4]
        response = RawResponse(head, b"")
        length = response.header("content-length")
        if length is not None:
            response.body = await _read_exactly(stream, buf, int(length))
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            while True:
                at = await _read_until(stream, buf, b"\r\n")
                size = int(bytes(buf[:at]), 16)
                del buf[: at + 2]
                chunk = await _read_exactly(stream, buf, size + 2)
                if size == 0:
                    break
                response.chunks.append(chunk[:-2])
            response.body = b"".join(response.chunks)
        else:
            while data := await stream.receive_some(65536):
                buf += data
            response.body = bytes(buf)
        return response
