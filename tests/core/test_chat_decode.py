"""Decoders against real captures and every quirk real servers show; garbage never raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.chat import Flavor, Framing
from routerd.core.chat_answer import (
    WholeBodyDecoder,
    new_decoder,
    parse_kobold_response,
    parse_ollama_response,
    parse_openai_response,
)
from routerd.core.chat_decode import error_message
from routerd.core.streams import (
    Chunk,
    Finish,
    ModelReported,
    Reasoning,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "servers"
SMOL = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def decode(
    body: bytes, flavor: Flavor = "openai", framing: Framing = "sse", step: int | None = None
) -> list[StreamEvent]:
    decoder = new_decoder(flavor, framing)
    out: list[StreamEvent] = []
    if step is None:
        out += decoder.feed(body)
    else:
        for i in range(0, len(body), step):
            out += decoder.feed(body[i : i + step])
    out += decoder.close()
    return out


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Chunk))


def meta(events: list[StreamEvent]) -> list[StreamEvent]:
    return [e for e in events if not isinstance(e, Chunk)]


def sse(*payloads: Any, done: bool = True, sep: str = "\n\n") -> bytes:
    parts = [f"data: {p if isinstance(p, str) else json.dumps(p)}{sep}" for p in payloads]
    if done:
        parts.append(f"data: [DONE]{sep}")
    return "".join(parts).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def ndjson(*lines: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


# --- Real captures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "llama-cpp-python/chat_stream.body",
        "llama-cpp-python/chat_stream_usage.body",
        "llama-server/chat_stream.body",
        "llama-server/chat_stream_usage.body",
    ],
)
def test_real_streams_byte_by_byte(name: str) -> None:
    body = (DATA / name).read_bytes()
    events = decode(body, step=1)
    assert events == decode(body)
    assert text(events).startswith("```python\ndef is_prime(n):")
    assert events[0] == ModelReported(SMOL)
    assert Finish("length") in events
    assert not any(isinstance(e, StreamError) for e in events)


def test_llama_cpp_python_never_sends_usage_even_when_asked() -> None:
    events = decode((DATA / "llama-cpp-python/chat_stream_usage.body").read_bytes())
    assert not any(isinstance(e, Usage) for e in events)
    assert meta(events) == [ModelReported(SMOL), Finish("length")]


def test_llama_server_timings_chunk_gives_usage_without_include_usage() -> None:
    events = decode((DATA / "llama-server/chat_stream.body").read_bytes())
    # timings: cache_n 41 + prompt_n 1 prompt tokens, predicted_n 32.
    assert meta(events) == [ModelReported(SMOL), Finish("length"), Usage(42, 32)]


def test_llama_server_usage_chunk_with_empty_choices() -> None:
    events = decode((DATA / "llama-server/chat_stream_usage.body").read_bytes())
    assert events[-1] == Usage(42, 32)
    assert events[-2] == Finish("length")


def test_reported_model_is_what_the_answer_says_not_what_was_asked() -> None:
    asked = "does-not-exist"
    python = decode((DATA / "llama-cpp-python/err_stream_unknown_model.body").read_bytes())
    server = decode((DATA / "llama-server/err_stream_unknown_model.body").read_bytes())
    assert python[0] == ModelReported(asked)  # llama-cpp-python echoes the asked name
    assert server[0] == ModelReported(SMOL)  # llama-server names what it really ran
    assert text(python) and text(server)


def test_aborted_stream_has_done_but_no_finish_reason_and_is_truncated() -> None:
    # llama-cpp-python, a second request aborted this one: [DONE] with no finish_reason.
    events = decode((DATA / "llama-cpp-python/conc_a.body").read_bytes(), step=3)
    assert text(events) == "The cat. It"
    assert isinstance(events[-1], StreamError)
    assert events[-1].kind == "truncated"


def test_empty_200_stream_is_empty_stream() -> None:
    # llama-cpp-python's streamed answer to a prompt longer than the context.
    body = (DATA / "llama-cpp-python/err_ctx_overflow_stream.body").read_bytes()
    assert body == b""
    assert decode(body) == [StreamError("empty_stream", "the server answered 200 with no events")]
    assert [e.kind for e in decode(b"", "ollama", "ndjson") if isinstance(e, StreamError)] == [
        "empty_stream"
    ]


def test_real_non_streaming_answers() -> None:
    python = decode((DATA / "llama-cpp-python/chat_nonstream.body").read_bytes(), framing="json")
    assert python[0] == ModelReported(SMOL)
    assert text(python).startswith("```python")
    assert python[-2:] == [Usage(26, 32), Finish("length")]
    server = decode((DATA / "llama-server/chat_nonstream.body").read_bytes(), framing="json")
    assert server[-2:] == [Usage(42, 32), Finish("length")]


# --- OpenAI quirks ---------------------------------------------------------------------------


def test_stream_without_done_but_with_finish_reason_is_complete() -> None:
    body = sse(chunk({"content": "hi"}), chunk({}, "stop"), done=False)
    assert decode(body) == [ModelReported("m"), Chunk("hi"), Finish("stop")]


def test_stream_without_done_or_finish_reason_is_truncated() -> None:
    events = decode(sse(chunk({"content": "hi"}), done=False))
    assert events[-1].kind == "truncated"  # type: ignore[union-attr]


def test_done_alone_is_empty_and_garbage_is_bad_response() -> None:
    assert decode(b"data: [DONE]\n\n")[-1].kind == "empty_stream"  # type: ignore[union-attr]
    events = decode(b"<html>502 Bad Gateway</html>")
    assert events == [StreamError("bad_response", "no events in 28 bytes of answer")]
    bad_json = decode(b"data: {not json\n\n")
    assert len(bad_json) == 1
    assert bad_json[0].kind == "bad_response"  # type: ignore[union-attr]


def test_error_object_inside_the_stream() -> None:
    overflow = {
        "error": {
            "code": 400,
            "message": "request (6031 tokens) exceeds the available context size (2048 tokens)",
            "type": "exceed_context_size_error",
        }
    }
    events = decode(sse(overflow))
    assert events == [StreamError("context_overflow", overflow["error"]["message"])]
    crash = sse(chunk({"content": "a"}), {"error": {"message": "slot died", "code": 500}})
    assert decode(crash)[-1] == StreamError("upstream_error", "slot died")
    python = {"error": {"message": "too long", "code": "context_length_exceeded"}}
    assert decode(sse(python))[-1].kind == "context_overflow"  # type: ignore[union-attr]


def test_nothing_follows_an_error() -> None:
    body = sse({"error": "boom"}, chunk({"content": "late"}), chunk({}, "stop"))
    events = decode(body, step=1)
    assert events == [StreamError("upstream_error", "boom")]


def test_reasoning_content_and_reasoning_are_reasoning_events() -> None:
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk({"reasoning_content": "think"}),
        chunk({"reasoning": " more"}),
        chunk({"content": "answer"}, "stop"),
    )
    assert meta(decode(body)) == [
        ModelReported("m"),
        Reasoning("think"),
        Reasoning(" more"),
        Finish("stop"),
    ]
    assert text(decode(body)) == "answer"


def test_tool_call_deltas_pass_through() -> None:
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "read_file", "arguments": ""},
    }
    body = sse(
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a.py"}'}}]}),
        chunk({}, "tool_calls"),
    )
    events = decode(body, step=2)
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, "call_1", "read_file", ""),
        ToolCallDelta(0, None, None, '{"path":'),
        ToolCallDelta(0, None, None, '"a.py"}'),
    ]
    assert events[-1] == Finish("tool_calls")


def test_tool_calls_without_index_are_numbered_by_id() -> None:
    body = sse(
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}]}),
        chunk({"tool_calls": [{"function": {"arguments": "more"}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    )
    calls = [e for e in decode(body) if isinstance(e, ToolCallDelta)]
    assert calls == [
        ToolCallDelta(0, "a", "f", '{"x":1}'),
        ToolCallDelta(0, None, None, "more"),
        ToolCallDelta(1, "b", "g", "{}"),
    ]


def test_extra_chunks_and_other_choices_are_ignored() -> None:
    body = sse(
        {"selected_model_id": "x"},  # Open WebUI adds chunks of its own
        {"model": "m", "choices": [{"index": 1, "delta": {"content": "other"}}]},
        chunk({"content": "mine"}, "stop"),
    )
    assert text(decode(body)) == "mine"


def test_crlf_spaced_and_comment_heavy_stream() -> None:
    body = b": ping\r\n\r\n" + sse(chunk({"content": "a"}), chunk({}, "stop"), sep="\r\n\r\n")
    assert decode(body, step=1) == [ModelReported("m"), Chunk("a"), Finish("stop")]


# --- Ollama ----------------------------------------------------------------------------------


def ollama_line(content: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "model": "qwen3:8b",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content, **extra},
        "done": False,
    }


OLLAMA_DONE = {
    "model": "qwen3:8b",
    "created_at": "2025-01-01T00:00:01Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5_000_000_000,
    "prompt_eval_count": 26,
    "eval_count": 3,
}


def test_ollama_stream_text_thinking_and_usage() -> None:
    body = ndjson(
        ollama_line(thinking="Let me"),
        ollama_line(thinking=" see."),
        ollama_line("Hel"),
        ollama_line("lo"),
        OLLAMA_DONE,
    )
    events = decode(body, "ollama", "ndjson", step=1)
    assert events == [
        ModelReported("qwen3:8b"),
        Reasoning("Let me"),
        Reasoning(" see."),
        Chunk("Hel"),
        Chunk("lo"),
        Usage(26, 3),
        Finish("stop"),
    ]


def test_ollama_whole_tool_calls_become_one_delta_each() -> None:
    calls = [
        {"function": {"name": "read_file", "arguments": {"path": "a.py"}}},
        {"id": "call_9", "function": {"name": "ls", "arguments": {}}},
    ]
    body = ndjson(ollama_line(tool_calls=calls), OLLAMA_DONE)
    events = decode(body, "ollama", "ndjson")
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, None, "read_file", '{"path":"a.py"}'),
        ToolCallDelta(1, "call_9", "ls", "{}"),
    ]
    assert events[-1] == Finish("tool_calls")  # Ollama says "stop"; clients expect tool_calls


def test_ollama_error_line_mid_stream() -> None:
    body = ndjson(ollama_line("Yes"), {"error": "an error was encountered while running the model"})
    events = decode(body, "ollama", "ndjson")
    assert events[-1] == StreamError(
        "upstream_error", "an error was encountered while running the model"
    )
    overflow = ndjson({"error": "input length exceeds the context length"})
    assert decode(overflow, "ollama", "ndjson")[-1].kind == "context_overflow"  # type: ignore[union-attr]


def test_ollama_stream_without_done_is_truncated_and_garbage_is_bad_response() -> None:
    events = decode(ndjson(ollama_line("a")), "ollama", "ndjson")
    assert events[-1].kind == "truncated"  # type: ignore[union-attr]
    garbage = decode(b'{"model":"x"}\nthis is not json\n', "ollama", "ndjson")
    assert garbage[-1].kind == "bad_response"  # type: ignore[union-attr]


def test_ollama_warm_up_answer_is_a_load_finish() -> None:
    line = {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "load",
    }
    assert decode(ndjson(line), "ollama", "ndjson") == [ModelReported("m"), Finish("load")]


def test_ollama_non_streaming_answer() -> None:
    body = json.dumps({**OLLAMA_DONE, "message": {"role": "assistant", "content": "Hi"}}).encode()
    assert parse_ollama_response(body) == [
        ModelReported("qwen3:8b"),
        Chunk("Hi"),
        Usage(26, 3),
        Finish("stop"),
    ]
    not_done = json.dumps(ollama_line("x")).encode()
    assert parse_ollama_response(not_done)[-1].kind == "truncated"  # type: ignore[union-attr]


# --- Kobold.cpp ------------------------------------------------------------------------------


def kobold(*tokens: tuple[str, str | None]) -> bytes:
    return b"".join(
        b"event: message\ndata: " + json.dumps({"token": t, "finish_reason": f}).encode() + b"\n\n"
        for t, f in tokens
    )


def test_kobold_stream() -> None:
    body = kobold(("Hel", None), ("lo", None), ("", "stop"))
    assert decode(body, "kobold", "sse", step=1) == [Chunk("Hel"), Chunk("lo"), Finish("stop")]


def test_kobold_finish_reason_error_and_missing_finish() -> None:
    assert decode(kobold(("a", None), ("", "error")), "kobold")[-1].kind == "upstream_error"  # type: ignore[union-attr]
    assert decode(kobold(("a", None)), "kobold")[-1].kind == "truncated"  # type: ignore[union-attr]


def test_kobold_non_streaming_answer() -> None:
    body = b'{"results": [{"text": "Hi", "finish_reason": "length", "prompt_tokens": 5, "completion_tokens": 1}]}'
    assert parse_kobold_response(body) == [Chunk("Hi"), Usage(5, 1), Finish("length")]
    assert parse_kobold_response(b'{"results": [{"text": ""}]}') == [Finish("stop")]
    assert parse_kobold_response(b'{"results": []}')[0].kind == "bad_response"  # type: ignore[union-attr]


# --- Whole bodies ----------------------------------------------------------------------------


def test_openai_non_streaming_with_tool_calls_and_reasoning() -> None:
    body = json.dumps(
        {
            "model": "m",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "hmm",
                        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }
    ).encode()
    assert parse_openai_response(body) == [
        ModelReported("m"),
        Reasoning("hmm"),
        ToolCallDelta(0, "c1", "f", "{}"),
        Usage(3, 4),
        Finish("tool_calls"),
    ]


def test_whole_body_decoder_limits_and_empty() -> None:
    decoder = WholeBodyDecoder(parse_openai_response, max_body=10)
    assert decoder.feed(b"x" * 11)[0].kind == "bad_response"  # type: ignore[union-attr]
    assert decoder.close() == []
    assert decode(b"  ", framing="json")[0].kind == "empty_stream"  # type: ignore[union-attr]
    assert decode(b"[1,2]", framing="json")[0].kind == "bad_response"  # type: ignore[union-attr]


def test_error_message_prefers_the_servers_words() -> None:
    assert error_message({"error": {"message": "Loading model"}}) == "Loading model"
    assert error_message({"error": "model 'x' not found"}) == "model 'x' not found"
    assert error_message({"detail": {"msg": "bad key"}}) == "bad key"
    assert error_message({"error": {"detail": "model not found"}}) == "model not found"
    assert error_message(None, b"Internal Server Error") == "Internal Server Error"
    assert error_message(None, b"") == "no message"
    assert len(error_message({"error": "x" * 1000})) == 300


# --- Properties ------------------------------------------------------------------------------

CAPTURES = [
    ("openai", "sse", (DATA / "llama-server/chat_stream_usage.body").read_bytes()[:4000]),
    ("openai", "sse", (DATA / "llama-cpp-python/conc_a.body").read_bytes()),
    ("ollama", "ndjson", ndjson(ollama_line(thinking="t"), ollama_line("a"), OLLAMA_DONE)),
    ("kobold", "sse", kobold(("a", None), ("b", "stop"))),
]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(CAPTURES),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
def test_any_chunking_gives_the_same_events(
    capture: tuple[Flavor, Framing, bytes], cuts: list[int]
) -> None:
    flavor, framing, body = capture
    points = sorted({c % (len(body) + 1) for c in cuts})
    decoder = new_decoder(flavor, framing)
    out: list[StreamEvent] = []
    last = 0
    for p in [*points, len(body)]:
        out += decoder.feed(body[last:p])
        last = p
    out += decoder.close()
    assert out == decode(body, flavor, framing)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            ("openai", "sse"),
            ("ollama", "ndjson"),
            ("kobold", "sse"),
            ("openai", "json"),
            ("ollama", "json"),
            ("kobold", "json"),
        ]
    ),
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: ("data: " + t + "\n\n").encode()),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "choices",
                            "delta",
                            "message",
                            "content",
                            "error",
                            "done",
                            "tool_calls",
                            "function",
                            "usage",
                            "index",
                            "model",
                        ]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(lambda v: ("data: " + json.dumps(v) + "\n\n" + json.dumps(v) + "\n").encode()),
    ),
)
def test_garbage_never_raises_and_ends_with_at_most_one_error(
    kind: tuple[Flavor, Framing], body: bytes
) -> None:
    events = decode(body, *kind)
    errors = [i for i, e in enumerate(events) if isinstance(e, StreamError)]
    assert len(errors) <= 1
    if errors:
        assert errors[0] == len(events) - 1
    else:
        assert any(isinstance(e, Finish) for e in events)


# --- Decoding as the events are taken (feed_iter) --------------------------------------------


@pytest.mark.parametrize(
    ("flavor", "framing", "name"),
    [
        ("openai", "sse", "llama-server/chat_stream_usage.body"),
        ("openai", "sse", "llama-cpp-python/chat_stream.body"),
        ("openai", "json", "llama-server/chat_nonstream.body"),
    ],
)
def test_feed_iter_gives_what_feed_gives(flavor: Flavor, framing: Framing, name: str) -> None:
    body = (DATA / name).read_bytes()
    for step in (7, 100, len(body)):
        decoder = new_decoder(flavor, framing)
        out: list[StreamEvent] = []
        for i in range(0, len(body), step):
            out.extend(decoder.feed_iter(body[i : i + step]))
        out += decoder.close()
        assert out == decode(body, flavor, framing), step


def test_feed_iter_decodes_no_further_than_the_events_taken() -> None:
    """The first token goes on its way before the rest of what arrived with it is decoded:
    here the end of the answer came in the same read, and is not seen yet."""
    body = sse(chunk({"content": "a"}), chunk({"content": "b"}), chunk({}, finish="stop"))
    decoder = new_decoder("openai", "sse")
    events = decoder.feed_iter(body)
    first = next(e for e in events if isinstance(e, Chunk))
    assert first == Chunk("a")
    assert not decoder.finished
    rest = list(events)
    assert Chunk("b") in rest and Finish("stop") in rest
    assert decoder.finished


def test_feed_iter_after_an_error_gives_nothing() -> None:
    decoder = new_decoder("openai", "sse")
    assert any(isinstance(e, StreamError) for e in decoder.feed_iter(b"data: {not json}\n\n"))
    assert list(decoder.feed_iter(sse(chunk({"content": "late"})))) == []
