"""An instant OpenAI-compatible model server for benchmarks: answers from precomputed bytes.

``python bench/_instant_backend.py PORT_FILE`` listens on 127.0.0.1 (a free port, written to
PORT_FILE) and answers, with HTTP/1.1 keep-alive:

* ``GET /v1/models``: one model, ``bench-model``;
* ``POST /v1/chat/completions``: with ``"stream": true`` one SSE content chunk, a finish
  chunk, a usage chunk and ``[DONE]``; otherwise one ``chat.completion``;
* anything else: 404.

It parses no JSON and does no work per request beyond finding the end of the request, so a
benchmark measures the client and the router, not the model server. Loopback only.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import trio

MODEL = "bench-model"


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _sse(*objects: object) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects) + (
        b"data: [DONE]\n\n"
    )


_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
STREAM = _response(
    "200 OK",
    "text/event-stream",
    _sse(
        {
            **_CHUNK,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}
            ],
        },
        {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            **_CHUNK,
            "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
        },
    ),
)
WHOLE = _response(
    "200 OK",
    "application/json",
    json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
        }
    ).encode(),
)
MODELS = _response(
    "200 OK",
    "application/json",
    json.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
    ).encode(),
)
NOT_FOUND = _response("404 Not Found", "application/json", b'{"error":"not found"}')


def _answer(head: bytes, body: bytes) -> bytes:
    line = head.split(b"\r\n", 1)[0]
    if line.startswith(b"GET /v1/models "):
        return MODELS
    if line.startswith(b"POST /v1/chat/completions "):
        return STREAM if b'"stream":true' in body.replace(b" ", b"") else WHOLE
    return NOT_FOUND


async def _serve(stream: trio.SocketStream) -> None:
    buf = b""
    try:
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                end = buf.find(b"\r\n\r\n")
            head, buf = buf[:end], buf[end + 4 :]
            length = 0
            for h in head.split(b"\r\n")[1:]:
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            await stream.send_all(_answer(head, body))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def main(port_file: str) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    # Written whole, then renamed: the benchmark never reads half a number.
    await trio.Path(port_file + ".tmp").write_text(str(sock.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    await trio.serve_listeners(_serve, [trio.SocketListener(sock)])


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
