"""The llama.cpp-based fakes answer byte for byte like the real captures in tests/data/servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes import FakeModel, Script, start_fake
from fakes.llamacpp import smollm2
from fakes.raw import RawResponse, raw_request

DATA = Path(__file__).resolve().parent.parent / "data" / "servers"
SERVER = DATA / "llama-server"
LCP = DATA / "llama-cpp-python"
CREATED = 1795627511  # the captures' clock
MARKER = "<__media_73VeNVhph2Mz7zUwXPmrAhfq9my5P1gL__>"


def capture_headers(path: Path) -> list[str]:
    """The captured header lines after the status line (line endings as stored vary)."""
    return [line for line in path.read_text().splitlines()[1:] if line]


def status_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def sse_events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n"), body[-40:]
    return [e for e in body.split(b"\n\n") if e]


def json_events(body: bytes) -> list[Any]:
    events = sse_events(body)
    assert events[-1] == b"data: [DONE]"
    return [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]


VOLATILE = {"id", "created", "x-request-id", "date"}


def normalise(value: Any) -> Any:
    """Replace values that differ between runs (ids, clocks, measured timings), keeping
    every key and its position."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in VOLATILE:
                out[key] = "*"
            elif key == "timings":
                out[key] = dict.fromkeys(item, "*")
            elif key == "cached_tokens":
                out[key] = 0
            else:
                out[key] = normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def contents(events: list[Any]) -> list[str]:
    return [
        e["choices"][0]["delta"]["content"]
        for e in events
        if e["choices"] and e["choices"][0]["delta"].get("content")
    ]


async def get(fake: Any, path: str, **kw: Any) -> RawResponse:
    return await raw_request(fake.base_url, "GET", path, **kw)


async def post(fake: Any, path: str, body: Any) -> RawResponse:
    return await raw_request(fake.base_url, "POST", path, json.dumps(body).encode())


def frozen(**kw: Any) -> dict[str, Any]:
    return {"clock": lambda: float(CREATED), **kw}


# --- llama-server --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/health", "health"),
        ("/v1/models", "models"),
        ("/slots", "slots"),
        ("/props", "props"),
        ("/no/such/path", "not_found"),
    ],
)
async def test_llama_server_bytes_match_capture(
    nursery: trio.Nursery, path: str, name: str
) -> None:
    fake = await start_fake(nursery, "llamacpp", **frozen(media_marker=MARKER))
    got = await get(fake, path)
    assert got.body == (SERVER / f"{name}.body").read_bytes()
    assert got.head.decode().split("\r\n")[0] == status_line(SERVER / f"{name}.headers")
    assert got.header_lines == capture_headers(SERVER / f"{name}.headers")


async def test_llama_server_root_and_metrics(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp")
    assert (await get(fake, "/")).body == (SERVER / "root.body").read_bytes()
    metrics = await get(fake, "/metrics")
    assert (metrics.status, metrics.body) == (501, (SERVER / "metrics.body").read_bytes())
    assert (await get(fake, "/v1/health")).body == (SERVER / "v1_health.body").read_bytes()


async def test_llama_server_parallel_2_slots_and_alias(nursery: trio.Nursery) -> None:
    fake = await start_fake(
        nursery,
        "llamacpp",
        models=[smollm2("smollm2-135m", n_ctx=1024)],
        slots=2,
        **frozen(),
    )
    assert (await get(fake, "/slots")).body == (SERVER / "np2" / "slots.body").read_bytes()
    models = json.loads((await get(fake, "/v1/models")).body)
    expected = json.loads((SERVER / "np2" / "models.body").read_bytes())
    assert normalise(models) == normalise(expected)


async def test_llama_server_loading_then_ready(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp", state="loading")
    for path, name in (("/health", "startup_health_503"), ("/v1/models", "startup_v1_models_503")):
        got = await get(fake, path)
        assert (got.status, got.body) == (503, (SERVER / f"{name}.body").read_bytes())
    chat = await post(
        fake, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert chat.status == 503
    fake.state = "ready"
    got = await get(fake, "/health")
    assert (got.status, got.body) == (200, (SERVER / "startup_health_200.body").read_bytes())


STREAM_REQUEST = {
    "model": "anything",
    "messages": [{"role": "user", "content": "Write is_prime in Python."}],
    "max_tokens": 32,
    "stream": True,
}


def capture_script(capture: Path, *, prompt: int, completion: int) -> Script:
    events = json_events(capture.read_bytes())
    return Script(
        chunks=contents(events),
        finish_reason="length",
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


@pytest.mark.parametrize("usage", [False, True])
async def test_llama_server_stream_matches_capture(nursery: trio.Nursery, usage: bool) -> None:
    name = "chat_stream_usage" if usage else "chat_stream"
    capture = SERVER / f"{name}.body"
    fake = await start_fake(
        nursery, "llamacpp", script=capture_script(capture, prompt=42, completion=32)
    )
    request = dict(STREAM_REQUEST, stream_options={"include_usage": usage})
    got = await post(fake, "/v1/chat/completions", request)
    assert got.header_lines == capture_headers(SERVER / f"{name}.headers")
    mine, real = json_events(got.body), json_events(capture.read_bytes())
    assert [normalise(e) for e in mine] == [normalise(e) for e in real]
    # Compact JSON, exactly as llama-server writes it (checked on a whole event).
    assert (
        sse_events(got.body)[1]
        == b"data: " + json.dumps(mine[1], separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert all(e["model"] == smollm2().id for e in mine)  # the loaded model's own id


async def test_llama_server_whole_answers_match_capture(nursery: trio.Nursery) -> None:
    real_chat = json.loads((SERVER / "chat_nonstream.body").read_bytes())
    real_text = json.loads((SERVER / "completions.body").read_bytes())
    fake = await start_fake(nursery, "llamacpp")
    fake.push_script(
        Script(
            chunks=[real_chat["choices"][0]["message"]["content"]],
            finish_reason="length",
            prompt_tokens=42,
            completion_tokens=32,
        ),
        Script(
            chunks=[real_text["choices"][0]["text"]],
            finish_reason="length",
            prompt_tokens=7,
            completion_tokens=16,
        ),
    )
    chat = await post(fake, "/v1/chat/completions", dict(STREAM_REQUEST, stream=False))
    text = await post(fake, "/v1/completions", {"prompt": "def add(a, b):", "max_tokens": 16})
    assert normalise(json.loads(chat.body)) == normalise(real_chat)
    assert normalise(json.loads(text.body)) == normalise(real_text)
    assert chat.header_lines[:3] == capture_headers(SERVER / "chat_nonstream.headers")[:3]


@pytest.mark.parametrize("stream", [False, True])
async def test_llama_server_context_overflow(nursery: trio.Nursery, stream: bool) -> None:
    fake = await start_fake(
        nursery,
        "llamacpp",
        script=Script(fail_before_first_token="context_overflow", prompt_tokens=6031),
    )
    got = await post(fake, "/v1/chat/completions", dict(STREAM_REQUEST, stream=stream))
    name = "err_ctx_overflow_stream" if stream else "err_ctx_overflow"
    assert got.status == 400
    assert got.body == (SERVER / f"{name}.body").read_bytes()
    assert got.header_lines == capture_headers(SERVER / f"{name}.headers")


async def test_llama_server_bad_json_and_any_model_name(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp")
    bad = await raw_request(fake.base_url, "POST", "/v1/chat/completions", b"{")
    assert bad.status == 500
    assert json.loads(bad.body)["error"]["type"] == "server_error"
    request = {"model": "does-not-exist", "messages": [{"role": "user", "content": "hi"}]}
    got = json.loads((await post(fake, "/v1/chat/completions", request)).body)
    real = json.loads((SERVER / "err_unknown_model.body").read_bytes())
    assert got["model"] == real["model"] == smollm2().id


# --- llama-cpp-python ----------------------------------------------------------------------


def names(lines: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in lines]


def stable(lines: list[str]) -> list[str]:
    """Header lines without the per-request values (date, request id, timing)."""
    skip = ("date:", "x-request-id:", "openai-processing-ms:")
    return [line for line in lines if not line.lower().startswith(skip)]


@pytest.mark.parametrize("name", ["health", "props", "slots", "not_found"])
async def test_llama_cpp_python_has_no_llama_server_paths(nursery: trio.Nursery, name: str) -> None:
    fake = await start_fake(nursery, "llama_cpp_python")
    path = {"health": "/health", "props": "/props", "slots": "/slots"}.get(name, "/nope")
    got = await get(fake, path)
    assert (got.status, got.body) == (404, (LCP / f"{name}.body").read_bytes())
    assert stable(got.header_lines) == stable(capture_headers(LCP / f"{name}.headers"))
    assert names(got.header_lines) == names(capture_headers(LCP / f"{name}.headers"))


@pytest.mark.parametrize("variant", ["", "variant2"])
async def test_llama_cpp_python_models(nursery: trio.Nursery, variant: str) -> None:
    models = [smollm2("smollm2-135m")] if variant else None
    fake = await start_fake(nursery, "llama_cpp_python", models=models)
    got = await get(fake, "/v1/models")
    assert got.body == (LCP / variant / "models.body").read_bytes()
    assert names(got.header_lines) == names(capture_headers(LCP / variant / "models.headers"))


@pytest.mark.parametrize("usage", [False, True])
async def test_llama_cpp_python_stream_matches_capture(nursery: trio.Nursery, usage: bool) -> None:
    name = "chat_stream_usage" if usage else "chat_stream"
    capture = LCP / f"{name}.body"
    fake = await start_fake(
        nursery, "llama_cpp_python", script=capture_script(capture, prompt=26, completion=32)
    )
    request = dict(STREAM_REQUEST, model=smollm2().id, stream_options={"include_usage": usage})
    got = await post(fake, "/v1/chat/completions", request)
    assert names(got.header_lines) == names(capture_headers(LCP / f"{name}.headers"))
    assert stable(got.header_lines) == stable(capture_headers(LCP / f"{name}.headers"))
    mine, real = json_events(got.body), json_events(capture.read_bytes())
    assert [normalise(e) for e in mine] == [normalise(e) for e in real]  # never a usage chunk
    assert sse_events(got.body)[2] == b"data: " + json.dumps(mine[2]).encode()  # spaced JSON


async def test_llama_cpp_python_echoes_unknown_model(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llama_cpp_python")
    request = dict(STREAM_REQUEST, model="does-not-exist")
    events = json_events((await post(fake, "/v1/chat/completions", request)).body)
    real = json_events((LCP / "err_stream_unknown_model.body").read_bytes())
    assert {e["model"] for e in events} == {e["model"] for e in real} == {"does-not-exist"}
    whole = json.loads((await post(fake, "/v1/chat/completions", dict(request, stream=False))).body)
    real_whole = json.loads((LCP / "err_unknown_model.body").read_bytes())
    assert list(whole) == list(real_whole)
    assert list(whole["choices"][0]["message"]) == ["content", "role"]
    assert whole["model"] == "does-not-exist"


async def test_llama_cpp_python_context_overflow(nursery: trio.Nursery) -> None:
    fake = await start_fake(
        nursery,
        "llama_cpp_python",
        script=Script(fail_before_first_token="context_overflow", prompt_tokens=6015),
    )
    request = dict(STREAM_REQUEST, max_tokens=8, stream=False)
    whole = await post(fake, "/v1/chat/completions", request)
    assert (whole.status, whole.body) == (400, (LCP / "err_ctx_overflow.body").read_bytes())
    assert names(whole.header_lines) == names(capture_headers(LCP / "err_ctx_overflow.headers"))
    streamed = await post(fake, "/v1/chat/completions", dict(request, stream=True))
    assert (streamed.status, streamed.body) == (200, b"")  # no events, no [DONE]
    assert stable(streamed.header_lines) == stable(
        capture_headers(LCP / "err_ctx_overflow_stream.headers")
    )


async def test_llama_cpp_python_bad_json_is_plain_text(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llama_cpp_python")
    got = await raw_request(fake.base_url, "POST", "/v1/chat/completions", b"{")
    assert (got.status, got.body) == (500, (LCP / "err_bad_json.body").read_bytes())
    assert stable(got.header_lines) == stable(capture_headers(LCP / "err_bad_json.headers"))


async def test_llama_cpp_python_whole_answer_matches_capture(nursery: trio.Nursery) -> None:
    real = json.loads((LCP / "chat_nonstream.body").read_bytes())
    fake = await start_fake(
        nursery,
        "llama_cpp_python",
        script=Script(
            chunks=[real["choices"][0]["message"]["content"]],
            finish_reason="length",
            prompt_tokens=26,
            completion_tokens=32,
        ),
    )
    got = await post(
        fake, "/v1/chat/completions", dict(STREAM_REQUEST, model=real["model"], stream=False)
    )
    assert normalise(json.loads(got.body)) == normalise(real)
    assert got.body.startswith(b'{"id":"chatcmpl-')  # compact, unlike its SSE events


def test_fake_model_defaults_fill_in() -> None:
    model = FakeModel("m", context_length=2048)
    assert model.max_context_length == 8192 and model.size_vram == model.size
    assert len(model.digest) == 64
