"""Request bodies and calls for each flavour: what each server needs, and nothing unstable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from routerd.core.chat import (
    DEFAULT_OLLAMA_NUM_CTX,
    FLAVORS,
    ChatCall,
    ChatRequest,
    ChatTarget,
    chat_url,
    flavor_for,
    kobold_generate_body,
    ollama_chat_body,
    ollama_messages,
    openai_chat_body,
    plan_chat,
    render_prompt,
)
from routerd.core.streams import StreamError

USER = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
}


def call(target: ChatTarget, request: ChatRequest | None = None) -> ChatCall:
    planned = plan_chat(target, request or ChatRequest(messages=USER))
    assert isinstance(planned, ChatCall)
    return planned


def body(planned: ChatCall) -> dict[str, Any]:
    value = json.loads(planned.body)
    assert isinstance(value, dict)
    return value


def test_ollama_always_sends_a_stable_num_ctx_and_keep_alive() -> None:
    target = ChatTarget(
        base_url="http://127.0.0.1:11434",
        flavor="ollama",
        model="qwen3:8b",
        num_ctx=8192,
        keep_alive="30m",
        options={"num_ctx": 2048, "seed": 1},
    )
    first = call(target, ChatRequest(messages=USER, temperature=0.2, max_tokens=99))
    second = call(target, ChatRequest(messages=USER * 3, extra={"num_ctx": 1}))
    assert first.url == "http://127.0.0.1:11434/api/chat"
    assert first.framing == "ndjson"
    for planned in (first, second):
        sent = body(planned)
        assert sent["options"]["num_ctx"] == 8192  # nothing overrides it
        assert sent["keep_alive"] == "30m"
        assert sent["stream"] is True
        assert sent["options"]["seed"] == 1
    assert body(first)["options"]["num_predict"] == 99
    assert body(first)["options"]["temperature"] == 0.2


def test_ollama_without_num_ctx_sends_the_fixed_default_not_nothing() -> None:
    sent = body(call(ChatTarget(base_url="http://h:11434", flavor="ollama", model="m")))
    assert sent["options"] == {"num_ctx": DEFAULT_OLLAMA_NUM_CTX}
    assert "keep_alive" not in sent
    assert "think" not in sent


def test_ollama_tools_think_and_tool_choice_none() -> None:
    target = ChatTarget(base_url="http://h:11434", flavor="ollama", model="m")
    sent = body(call(target, ChatRequest(messages=USER, tools=[TOOL], think=True)))
    assert sent["tools"] == [TOOL]
    assert sent["think"] is True
    none = body(call(target, ChatRequest(messages=USER, tools=[TOOL], tool_choice="none")))
    assert "tools" not in none


def test_ollama_messages_from_openai_shapes() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "bad", "arguments": "[1"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "print(1)"},
    ]
    out = ollama_messages(messages)
    assert out[0] == {"role": "user", "content": "look", "images": ["AAAA"]}
    assert out[1]["content"] == ""
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"path": "a.py"}
    assert out[1]["tool_calls"][1]["function"]["arguments"] == "[1"  # left for Ollama to refuse
    assert out[2]["tool_name"] == "read_file"
    assert messages[1]["content"] is None  # the input is not modified


def test_openai_body_asks_for_usage_and_passes_tools() -> None:
    target = ChatTarget(
        base_url="http://127.0.0.1:8080", flavor="openai", model="m", options={"seed": 3}
    )
    request = ChatRequest(
        messages=USER,
        tools=[TOOL],
        tool_choice="auto",
        max_tokens=5,
        stop=["\n"],
        extra={"model": "evil", "top_k": 4},
    )
    planned = call(target, request)
    assert planned.url == "http://127.0.0.1:8080/v1/chat/completions"
    assert planned.framing == "sse"
    assert planned.headers["Accept"] == "text/event-stream"
    sent = body(planned)
    assert sent["model"] == "m"
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["tools"] == [TOOL] and sent["tool_choice"] == "auto"
    assert sent["max_tokens"] == 5 and sent["stop"] == ["\n"]
    assert sent["seed"] == 3 and sent["top_k"] == 4
    assert sent["messages"] == USER


def test_openai_non_streaming_and_without_usage() -> None:
    sent = openai_chat_body("m", USER, stream=False)
    assert sent == {"model": "m", "messages": USER, "stream": False}
    assert "stream_options" not in openai_chat_body("m", USER, include_usage=False)
    assert "tool_choice" not in openai_chat_body("m", USER, tool_choice="auto")


@pytest.mark.parametrize(
    ("flavor", "path"),
    [
        ("openai", "/v1/chat/completions"),
        ("textgen", "/v1/chat/completions"),
        ("openwebui", "/api/chat/completions"),
        ("kobold", "/api/extra/generate/stream"),
        ("ollama", "/api/chat"),
    ],
)
def test_paths_and_bearer_key(flavor: Any, path: str) -> None:
    target = ChatTarget(
        base_url="http://h:3000/",
        flavor=flavor,
        model="m",
        api_key="sk-1",
        headers={"X-Extra": "1"},
    )
    planned = call(target)
    assert planned.url == "http://h:3000" + path
    assert planned.headers["Authorization"] == "Bearer sk-1"
    assert planned.headers["X-Extra"] == "1"
    assert flavor in FLAVORS


def test_base_url_ending_in_v1_is_not_doubled() -> None:
    assert (
        chat_url("http://h:1234/v1", "/v1/chat/completions") == "http://h:1234/v1/chat/completions"
    )
    assert chat_url("http://h:1234/v1/", "/api/chat") == "http://h:1234/v1/api/chat"
    assert chat_url("http://h", "/v1/x") == "http://h/v1/x"


def test_non_streaming_paths_and_framing() -> None:
    request = ChatRequest(messages=USER, stream=False)
    kobold = call(ChatTarget(base_url="http://h:5001", flavor="kobold", model="m"), request)
    assert kobold.url == "http://h:5001/api/v1/generate"
    assert kobold.framing == "json"
    ollama = call(ChatTarget(base_url="http://h", flavor="ollama", model="m"), request)
    assert ollama.framing == "json" and body(ollama)["stream"] is False


def test_kobold_refuses_tools_rather_than_dropping_them() -> None:
    target = ChatTarget(base_url="http://h:5001", flavor="kobold", model="m")
    refused = plan_chat(target, ChatRequest(messages=USER, tools=[TOOL]))
    assert isinstance(refused, StreamError)
    assert refused.kind == "unsupported"


def test_kobold_body_from_chat() -> None:
    target = ChatTarget(base_url="http://h:5001", flavor="kobold", model="m", num_ctx=4096)
    sent = body(call(target, ChatRequest(messages=USER, stop=["###"], temperature=0.5)))
    assert sent["prompt"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert sent["max_context_length"] == 4096
    assert sent["max_length"] == 512
    assert sent["stop_sequence"] == ["<|im_end|>", "<|im_start|>", "###"]
    assert sent["trim_stop"] is True
    assert kobold_generate_body("p", max_length=3, stop_sequence=["a", "a"])["stop_sequence"] == [
        "a"
    ]


def test_render_prompt_styles() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
    ]
    chatml, stops = render_prompt(messages, "chatml")
    assert chatml.count("<|im_start|>") == 5
    assert chatml.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert chatml.endswith("<|im_start|>assistant\n")
    assert "<|im_end|>" in stops
    plain, plain_stops = render_prompt(messages, "plain")
    assert plain == "Be brief.\nUser: 2+2?\nAssistant: 4\nUser: and 3+3?\nAssistant:"
    assert "\nUser:" in plain_stops


def test_bodies_are_byte_identical_for_the_same_input() -> None:
    target = ChatTarget(
        base_url="http://h", flavor="ollama", model="m", num_ctx=4096, options={"b": 1, "a": 2}
    )
    request = ChatRequest(messages=USER, tools=[TOOL], temperature=0.1)
    assert call(target, request).body == call(target, request).body
    assert ollama_chat_body("m", USER, 1)["options"] == {"num_ctx": 1}


def test_flavor_for_kinds() -> None:
    assert flavor_for("ollama", "ollama") == "ollama"
    assert flavor_for("ollama", "openai") == "openai"
    assert flavor_for("openwebui", "openai") == "openwebui"
    assert flavor_for("textgen", "openai") == "textgen"
    assert flavor_for("koboldcpp", "openai") == "openai"
    assert flavor_for("llamacpp", "openai") == "openai"


# --- seed and response_format ------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
AS_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


def test_seed_and_response_format_in_each_flavour() -> None:
    from routerd.core.chat import ollama_format

    request = ChatRequest(messages=USER, seed=7, response_format=AS_SCHEMA)
    openai = body(call(ChatTarget(base_url="http://h:8080", flavor="openai", model="m"), request))
    assert openai["seed"] == 7 and openai["response_format"] == AS_SCHEMA
    ollama = body(call(ChatTarget(base_url="http://h", flavor="ollama", model="m"), request))
    assert ollama["options"]["seed"] == 7 and ollama["format"] == SCHEMA
    as_json = ChatRequest(messages=USER, response_format={"type": "json_object"})
    assert body(call(ChatTarget(base_url="http://h", flavor="ollama", model="m"),
                     as_json))["format"] == "json"  # fmt: skip
    plain = body(call(ChatTarget(base_url="http://h", flavor="ollama", model="m")))
    assert "format" not in plain and "seed" not in plain["options"]
    assert ollama_format({"type": "text"}) is None
    kobold = ChatTarget(base_url="http://h:5001", flavor="kobold", model="m")
    assert body(call(kobold, ChatRequest(messages=USER, seed=3)))["sampler_seed"] == 3
    refused = plan_chat(kobold, request)
    assert isinstance(refused, StreamError) and refused.kind == "unsupported"
    assert isinstance(plan_chat(kobold, ChatRequest(messages=USER,
                                                    response_format={"type": "text"})), ChatCall)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, None),
        (AS_SCHEMA, None),
        ("json", "must be an object"),
        ({"type": "yaml"}, "type must be"),
        ({"type": "json_schema"}, "schema must be"),
        ({"type": "json_schema", "json_schema": {"schema": "x"}}, "schema must be"),
    ],
)
def test_response_format_problem(value: Any, problem: str | None) -> None:
    from routerd.core.chat import response_format_problem

    found = response_format_problem(value)
    assert (found is None) if problem is None else (found is not None and problem in found)
