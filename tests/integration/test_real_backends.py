"""The execution adapters against the real llama.cpp-based servers (fixtures in conftest.py):
a real answer streamed through ``run_chat``, and their real context-overflow answers."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
import pytest

from routerd.shell.backends import (
    ChatRequest,
    ChatTarget,
    Chunk,
    Done,
    ModelReported,
    StreamError,
    StreamEvent,
    Timeouts,
    run_chat,
)

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
MAX_TOKENS = 16
PATIENT = Timeouts(connect=5.0, first_token=60.0, idle=30.0, overall=120.0)


@pytest.fixture(params=["python", "server"])
def real_server(request: pytest.FixtureRequest) -> Any:
    name = "llama_cpp_python_server" if request.param == "python" else "llama_server"
    return request.getfixturevalue(name)


async def run(server: Any, request: ChatRequest, model: str = "smollm2") -> list[StreamEvent]:
    target = ChatTarget(base_url=server.base_url, flavor="openai", model=model)
    async with (
        httpx.AsyncClient(trust_env=False) as client,
        aclosing(run_chat(client, target, request, PATIENT)) as events,
    ):
        return [event async for event in events]


async def test_a_real_answer_streams_through_the_adapter(
    real_server: Any, llama_paths: Any
) -> None:
    request = ChatRequest(messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0)
    events = await run(real_server, request)
    done = events[-1]
    assert isinstance(done, Done), events[-3:]
    assert "".join(e.text for e in events if isinstance(e, Chunk)).strip()
    assert done.finish_reason in ("stop", "length")
    assert done.first_token_s is not None and done.first_token_s < PATIENT.first_token
    reported = next(e.model for e in events if isinstance(e, ModelReported))
    if real_server.kind == "server":
        # llama-server names the model it really ran, whatever was asked; and reports usage.
        assert reported == str(llama_paths.model)
        assert done.completion_tokens is not None and 0 < done.completion_tokens <= MAX_TOKENS
    else:
        assert reported == "smollm2"  # llama-cpp-python echoes the asked name
        assert done.completion_tokens is None  # it never sends a usage chunk


async def test_a_real_non_streamed_answer(real_server: Any) -> None:
    request = ChatRequest(messages=PROMPT, max_tokens=MAX_TOKENS, stream=False)
    events = await run(real_server, request)
    done = events[-1]
    assert isinstance(done, Done), events
    assert done.completion_tokens is not None and 0 < done.completion_tokens <= MAX_TOKENS


async def test_real_context_overflow(real_server: Any) -> None:
    # The fixtures run with a 1024-token context.
    long = [{"role": "user", "content": "word " * 3000}]
    events = await run(real_server, ChatRequest(messages=long, max_tokens=8))
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, StreamError)
    if real_server.kind == "server":
        assert (error.kind, error.status) == ("context_overflow", 400)
    else:
        # llama-cpp-python, streaming: 200 with an empty body.
        assert error.kind == "empty_stream"
