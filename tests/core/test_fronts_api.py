"""The HTTP fronts' pure translations: model names, OpenAI and Ollama requests to ``route``
params, ``route`` events to each API's answers, listings and passthrough picks."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from routerd.core.candidates import Candidate, candidate_from_discovered
from routerd.core.errors import BadRequest
from routerd.core.fronts import ollama_api, openai_api
from routerd.core.fronts.models import (
    ModelChoice,
    facts_of,
    parse_model,
    pick_passthrough,
    unique_models,
    virtual_models,
)
from routerd.core.fronts.wire import decode_body, iso_time, status_for
from routerd.core.model_parsers import DiscoveredModel
from routerd.data import load_builtin_catalog
from routerd_client.protocol_route import (
    RouteEnd,
    SelectedEvent,
    ToolCallEvent,
    ToolCallInfo,
    UsageEvent,
)

CATALOG = load_builtin_catalog()


def end(**fields: Any) -> RouteEnd:
    base: dict[str, Any] = dict(finish_reason="stop", model="qwen2.5-coder:7b",
                                requested_model="qwen2.5-coder:7b", service="ollama",
                                category="coding", fallback_level=0)  # fmt: skip
    base.update(fields)
    return RouteEnd(**base)


def selected(model: str = "qwen2.5-coder:7b", prompt: int = 40) -> SelectedEvent:
    return SelectedEvent(model=model, service="ollama", category="coding",
                         category_source="classified", fallback_level=0, level="PRIMARY",
                         attempt=1, reason="r", window_tokens=8192, prompt_tokens=prompt)  # fmt: skip


def candidate(name: str, service: str = "ollama", *, caps: tuple[str, ...] = (),
              loaded: bool | None = None, priority: int = 1,
              admission: str = "admit") -> Candidate:  # fmt: skip
    model = DiscoveredModel(id=name, service=service, capabilities=caps, loaded=loaded)
    return candidate_from_discovered(model, CATALOG, service_priority=priority,
                                     admission=admission)  # type: ignore[arg-type]  # fmt: skip


# --- model names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "choice"),
    [
        (None, ModelChoice()),
        ("", ModelChoice()),
        ("routerd/auto", ModelChoice()),
        ("routerd/auto:latest", ModelChoice()),
        ("ROUTERD/Coding", ModelChoice(category="coding")),
        ("routerd/documentation:latest", ModelChoice(category="documentation")),
        ("qwen2.5-coder:7b", ModelChoice(model="qwen2.5-coder:7b")),
    ],
)
def test_model_names_mean_a_model_or_a_choice(name: str | None, choice: ModelChoice) -> None:
    assert parse_model(name) == choice


def test_an_unknown_routerd_name_is_a_bad_request_listing_the_real_ones() -> None:
    with pytest.raises(BadRequest, match="routerd/auto, routerd/coding"):
        parse_model("routerd/fastest")
    assert virtual_models()[0] == "routerd/auto" and len(virtual_models()) == 5


# --- OpenAI requests -----------------------------------------------------------------------


def chat_body(**fields: Any) -> openai_api.ChatBody:
    doc = {"messages": [{"role": "user", "content": "hi"}], **fields}
    return decode_body(json.dumps(doc).encode(), openai_api.ChatBody)


def test_openai_fields_pass_through_to_route_params() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    params = openai_api.route_params(chat_body(
        model="qwen2.5-coder:7b", tools=tools, tool_choice="auto", max_tokens=50,
        max_completion_tokens=60, temperature=0.2, top_p=0.9, stop="\n\n", seed=7,
        response_format={"type": "text"},
    ))  # fmt: skip
    assert params.model == "qwen2.5-coder:7b" and params.category is None
    assert params.tools == tools and params.tool_choice == "auto"
    assert (params.max_tokens, params.temperature, params.top_p) == (60, 0.2, 0.9)
    assert params.stop == ["\n\n"] and params.messages == [{"role": "user", "content": "hi"}]


def test_virtual_models_and_the_routerd_object_steer_routing() -> None:
    params = openai_api.route_params(chat_body(model="routerd/reasoning"))
    assert (params.model, params.category) == (None, "reasoning")
    extras = {"session_id": "new", "category": "analysis",
              "file_context": {"file": "a.py", "line": 3}}  # fmt: skip
    params = openai_api.route_params(chat_body(model="routerd/reasoning", routerd=extras))
    assert params.category == "analysis" and params.session_id == "new"
    assert params.file_context is not None and params.file_context.line == 3


def test_more_than_one_choice_is_refused() -> None:
    with pytest.raises(BadRequest, match="n must be 1"):
        openai_api.route_params(chat_body(n=2))


def test_a_bad_body_is_a_bad_request_naming_the_field() -> None:
    with pytest.raises(BadRequest, match="messages"):
        decode_body(b'{"model": "x"}', openai_api.ChatBody)
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_body(b"{", openai_api.ChatBody)
    with pytest.raises(BadRequest, match="no JSON body"):
        decode_body(b"  ", openai_api.ChatBody)


# --- OpenAI answers ------------------------------------------------------------------------


def test_a_stream_has_role_first_then_content_finish_and_usage() -> None:
    c = openai_api.ChatChunks(completion_id="chatcmpl-1", created=5, model="routerd/auto",
                              include_usage=True)  # fmt: skip
    c.selected(selected(prompt=40))
    first, second = c.content("def "), c.content("f")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "def "}
    assert second["choices"][0]["delta"] == {"content": "f"}
    assert first["model"] == "qwen2.5-coder:7b" and first["object"] == "chat.completion.chunk"
    c.usage(UsageEvent(12, 2))
    finish, usage = c.end(end(prompt_tokens=None))
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": "stop"}  # fmt: skip
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}  # fmt: skip


def test_without_a_server_count_the_usage_is_routerds_estimate() -> None:
    c = openai_api.ChatChunks(completion_id="x", created=0, model="m", include_usage=True)
    c.selected(selected(prompt=40))
    assert c.end(end())[1]["usage"]["prompt_tokens"] == 40
    quiet = openai_api.ChatChunks(completion_id="x", created=0, model="m", include_usage=False)
    assert len(quiet.end(end())) == 1


def test_tool_call_deltas_stream_and_finish_as_tool_calls() -> None:
    c = openai_api.ChatChunks(completion_id="x", created=0, model="m", include_usage=False)
    one = c.tool_call(ToolCallEvent(0, '{"a":', id="call_1", name="lookup"))
    two = c.tool_call(ToolCallEvent(0, " 1}"))
    assert one["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"arguments": '{"a":', "name": "lookup"}}]  # fmt: skip
    assert two["choices"][0]["delta"] == {"tool_calls": [{"index": 0,
                                                          "function": {"arguments": " 1}"}}]}  # fmt: skip
    # Ollama says "stop" after tool calls; OpenAI clients expect "tool_calls".
    assert c.end(end(finish_reason="stop"))[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_an_answer_cut_short_ends_with_an_error_object() -> None:
    c = openai_api.ChatChunks(completion_id="x", created=0, model="m", include_usage=True)
    (error,) = c.end(end(finish_reason="incomplete", reason="the server went away"))
    assert error["error"]["code"] == "incomplete"
    assert "the server went away" in error["error"]["message"]


def test_a_whole_answer_is_a_chat_completion() -> None:
    calls = [ToolCallInfo(0, '{"x": 1}', id=None, name="f")]
    out = openai_api.chat_completion(end(completion_tokens=3), "", "thought", calls,
                                     completion_id="chatcmpl-abcdefgh", created=9,
                                     estimated_prompt=33)  # fmt: skip
    message = out["choices"][0]["message"]
    assert message["content"] is None and message["reasoning_content"] == "thought"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert message["tool_calls"][0]["id"].startswith("call_")
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 33, "completion_tokens": 3, "total_tokens": 36}
    plain = openai_api.chat_completion(end(finish_reason="length"), "hi", "", [],
                                       completion_id="c", created=0)  # fmt: skip
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert plain["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "invalid_request_error"), (401, "invalid_request_error"),
                         (404, "invalid_request_error"), (503, "server_error")],
)  # fmt: skip
def test_errors_have_openais_shape(status: int, kind: str) -> None:
    body = openai_api.error_body("nope", status, "some_code")
    assert body == {"error": {"message": "nope", "type": kind, "param": None, "code": "some_code"}}


def test_error_codes_map_to_http_statuses() -> None:
    assert [status_for(c) for c in ("bad_request", "not_found", "unavailable", "timeout",
                                    "forbidden", "whatever")] == [400, 404, 503, 504, 403, 500]  # fmt: skip


# --- Ollama requests -----------------------------------------------------------------------


def test_ollama_messages_become_openai_messages() -> None:
    messages = [
        {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
            {"function": {"name": "time", "arguments": {}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "time"},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]  # fmt: skip
    user, assistant, t1, t2 = ollama_api.openai_messages(messages)
    assert user["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    calls = assistant["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    # Each tool answer is tied to the call of its name, whatever the order.
    assert (t1["tool_call_id"], t1["name"]) == (calls[1]["id"], "time")
    assert t2["tool_call_id"] == calls[0]["id"]


def test_ollama_chat_options_pass_through() -> None:
    body = decode_body(json.dumps({
        "model": "routerd/coding:latest", "messages": [{"role": "user", "content": "x"}],
        "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 64, "stop": ["</s>"],
                    "num_ctx": 99999, "mirostat": 2},
        "keep_alive": "5m", "format": "json",
    }).encode(), ollama_api.ChatBody)  # fmt: skip
    params = ollama_api.chat_params(body)
    assert params.category == "coding" and params.model is None
    assert (params.temperature, params.top_p, params.max_tokens) == (0.1, 0.5, 64)
    assert params.stop == ["</s>"]
    assert ollama_api.chat_params(msgspec.structs.replace(
        body, options=ollama_api.Options(num_predict=-1))).max_tokens is None  # fmt: skip


def test_generate_is_one_user_message_with_routerds_system_prompt_unless_given_one() -> None:
    bare = ollama_api.generate_params(ollama_api.GenerateBody(model="m", prompt="write f"))
    assert bare.query == "write f" and bare.messages is None and bare.model == "m"
    own = ollama_api.generate_params(ollama_api.GenerateBody(prompt="write f", system="be brief"))
    assert own.messages == [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "write f"}]  # fmt: skip


def test_fill_in_the_middle_is_a_completions_request_and_its_answer_an_end() -> None:
    body = ollama_api.GenerateBody(model="qwen2.5-coder:7b", prompt="def f(", suffix="):",
                                   options=ollama_api.Options(num_predict=16, stop="\n"))  # fmt: skip
    assert ollama_api.fim_request(body) == {"model": "qwen2.5-coder:7b", "prompt": "def f(",
                                            "suffix": "):", "stream": False, "max_tokens": 16,
                                            "stop": ["\n"]}  # fmt: skip
    answer = {"model": "qwen", "choices": [{"text": "a, b", "finish_reason": "length"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2}}  # fmt: skip
    text, e = ollama_api.fim_answer(answer, model="qwen2.5-coder:7b", service="ollama",
                                    total_s=0.5)  # fmt: skip
    assert text == "a, b" and e.finish_reason == "length" and e.completion_tokens == 2
    assert ollama_api.fim_answer([], model="m", service="s", total_s=0)[0] == ""


# --- Ollama answers ------------------------------------------------------------------------


def test_ollama_lines_then_tool_calls_then_the_final_line() -> None:
    lines = ollama_api.Lines(model="routerd/auto", chat=True)
    piece = lines.content("def", 0.0)
    assert piece == {"model": "routerd/auto", "created_at": "1970-01-01T00:00:00.000000Z",
                     "message": {"role": "assistant", "content": "def"}, "done": False}  # fmt: skip
    assert lines.reasoning("hmm", 0.0)["message"]["thinking"] == "hmm"
    calls = [ToolCallInfo(0, '{"city": "Oslo"}', id="c1", name="weather"),
             ToolCallInfo(1, "not json", name="raw")]  # fmt: skip
    done = end(prompt_tokens=10, completion_tokens=4, first_token_s=0.25, total_s=1.0)
    tool_line, final = lines.end(done, calls, 1.0)
    assert tool_line["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}, "id": "c1"},
        {"function": {"index": 1, "name": "raw", "arguments": {"arguments": "not json"}}},
    ]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (10, 4)
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (250_000_000, 750_000_000)
    assert final["model"] == "routerd/auto"  # Ollama echoes the name it was asked for


def test_ollama_generate_lines_and_errors() -> None:
    lines = ollama_api.Lines(model="m", chat=False)
    assert lines.content("x", 0.0)["response"] == "x"
    whole = lines.whole(end(finish_reason="length"), "abc", "", (), 0.0)
    assert whole["response"] == "abc" and whole["done_reason"] == "length"
    assert lines.end(end(finish_reason="incomplete", reason="gone"), (), 0.0) == [
        {"error": "the answer broke off: gone"}]  # fmt: skip
    loaded = lines.loaded(0.0)
    assert loaded["done_reason"] == "load" and loaded["done"] is True


def facts(name: str, service: str = "ollama", **kw: Any) -> Any:
    return facts_of(candidate(name, service, caps=kw.pop("caps", ())), **kw)


def test_tags_list_virtual_models_then_each_model_once() -> None:
    listed = unique_models([facts("qwen2.5-coder:7b", size=4_000, digest="d" * 64),
                            facts("qwen2.5-coder:7b", "llamacpp"),
                            facts("nomic-embed-text")])  # fmt: skip
    out = ollama_api.tags(listed, started=0.0)["models"]
    names = [m["name"] for m in out]
    assert names[:2] == ["routerd/auto:latest", "routerd/coding:latest"]
    assert names[5:] == ["qwen2.5-coder:7b", "nomic-embed-text"]
    assert out[5]["size"] == 4_000 and out[5]["digest"] == "d" * 64
    assert out[5]["details"]["family"] == "qwen2.5-coder"


def test_ps_lists_only_loaded_models_and_show_says_the_window() -> None:
    loaded = facts_of(candidate("qwen2.5-coder:7b", loaded=True), size_vram=5, expires_at=60.0)
    idle = facts_of(candidate("llama3.2:latest", loaded=False))
    (entry,) = ollama_api.ps([loaded, idle])["models"]
    assert entry["name"] == "qwen2.5-coder:7b" and entry["size_vram"] == 5
    window = candidate("qwen2.5-coder:7b").context_length  # the database's, none reported
    assert entry["expires_at"] == iso_time(60.0) and entry["context_length"] == window
    shown = ollama_api.show(loaded, "qwen2.5-coder:7b", started=0.0)
    info = shown["model_info"]
    assert info[f"{info['general.architecture']}.context_length"] == window
    assert "insert" in shown["capabilities"] and "tools" in shown["capabilities"]
    virtual = ollama_api.show(None, "routerd/auto", started=0.0, context_length=8192)
    assert virtual["model_info"]["routerd.context_length"] == 8192


# --- passthrough picks ---------------------------------------------------------------------


def test_fim_goes_to_a_fim_model_resident_first() -> None:
    cands = [candidate("llama3.2:latest", loaded=True),
             candidate("qwen2.5-coder:7b", loaded=False),
             candidate("qwen2.5-coder:1.5b", "llamacpp", loaded=True, priority=2)]  # fmt: skip
    picked = pick_passthrough(cands, "routerd/auto", "completion", CATALOG, needs_fim=True)
    assert isinstance(picked, list)
    assert [c.model for c in picked] == ["qwen2.5-coder:1.5b", "qwen2.5-coder:7b"]


def test_without_fim_models_a_suffix_finds_none_but_a_prompt_finds_any() -> None:
    cands = [candidate("llama3.2:latest"), candidate("nomic-embed-text")]
    none = pick_passthrough(cands, "routerd/auto", "completion", CATALOG, needs_fim=True)
    assert isinstance(none, str) and "fill-in-the-middle" in none
    picked = pick_passthrough(cands, "routerd/auto", "completion", CATALOG)
    assert [c.model for c in picked] == ["llama3.2:latest"]  # type: ignore[union-attr]


def test_embeddings_need_an_embedding_model_or_an_explicit_name() -> None:
    cands = [candidate("llama3.2:latest"), candidate("nomic-embed-text", priority=2),
             candidate("bge-m3", "other", caps=("embedding",), admission="refuse")]  # fmt: skip
    picked = pick_passthrough(cands, None, "embedding", CATALOG)
    assert [c.model for c in picked] == ["nomic-embed-text"]  # type: ignore[union-attr]
    assert isinstance(pick_passthrough(cands[:1], None, "embedding", CATALOG), str)
    named = pick_passthrough(cands, "llama3.2:latest", "embedding", CATALOG)
    assert [c.model for c in named] == ["llama3.2:latest"]  # type: ignore[union-attr]


def test_an_explicit_name_goes_only_where_it_is_offered() -> None:
    cands = [
        candidate("qwen2.5-coder:7b", "webui"),
        candidate("qwen2.5-coder:7b", "ollama", priority=2),
    ]
    picked = pick_passthrough(cands, "qwen2.5-coder:7b", "completion", CATALOG,
                              excluded=frozenset({"webui"}))  # fmt: skip
    assert [c.service for c in picked] == ["ollama"]  # type: ignore[union-attr]
    missing = pick_passthrough(cands, "mistral:7b", "completion", CATALOG)
    assert isinstance(missing, str) and "mistral:7b" in missing


def test_a_blocked_model_is_never_passed_through() -> None:
    bad = msgspec.structs.replace(candidate("qwen2.5-coder:7b", loaded=True),
                                  blocked="checksum mismatch: /m/blob")  # fmt: skip
    cands = [bad, candidate("qwen2.5-coder:1.5b", "llamacpp", priority=2)]
    picked = pick_passthrough(cands, "routerd/auto", "completion", CATALOG, needs_fim=True)
    assert [c.model for c in picked] == ["qwen2.5-coder:1.5b"]  # type: ignore[union-attr]
    named = pick_passthrough(cands, "qwen2.5-coder:7b", "completion", CATALOG)
    assert named == "the model 'qwen2.5-coder:7b' is blocked (checksum mismatch: /m/blob)"


# --- Ollama embeddings -------------------------------------------------------------------------


def test_embed_inputs_and_request() -> None:
    EmbedBody, embed_inputs = ollama_api.EmbedBody, ollama_api.embed_inputs
    body = EmbedBody(model="m", input="one", dimensions=64)
    assert embed_inputs(body, legacy=False) == ["one"]
    assert ollama_api.embed_request(body, ["one"]) == {"model": "m", "input": ["one"], "dimensions": 64}
    assert embed_inputs(EmbedBody(model="m", input=["a", "b"]), legacy=False) == ["a", "b"]
    assert embed_inputs(EmbedBody(model="m", prompt="p"), legacy=True) == ["p"]
    with pytest.raises(ValueError, match="input is required"):
        embed_inputs(EmbedBody(model="m"), legacy=False)
    with pytest.raises(ValueError, match="prompt is required"):
        embed_inputs(EmbedBody(model="m", input="x"), legacy=True)


def test_embed_answer_puts_vectors_in_input_order_and_checks_them() -> None:
    embed_answer = ollama_api.embed_answer
    data = {"data": [{"index": 1, "embedding": [0.5, 1]}, {"index": 0, "embedding": [2, 3.5]}],
            "usage": {"prompt_tokens": 7}}  # fmt: skip
    assert embed_answer(data, model="m", count=2) == ([[2.0, 3.5], [0.5, 1.0]], 7)
    assert embed_answer({"data": [{"embedding": [1]}]}, model="m", count=1) == ([[1.0]], None)
    for bad in ({"data": []}, {"data": [{"embedding": "x"}]}, {"data": [{"embedding": [True]}]},
                [1, 2], {"data": [{"embedding": [1]}, {"embedding": [2]}]}):  # fmt: skip
        with pytest.raises(ValueError):
            embed_answer(bad, model="m", count=1)


def test_fronts_pass_seed_and_response_format_on() -> None:
    schema = {"type": "object"}
    body = decode_body(json.dumps({"messages": [{"role": "user", "content": "hi"}], "seed": 5,
                                   "response_format": {"type": "json_object"}}).encode(),
                       openai_api.ChatBody)  # fmt: skip
    params = openai_api.route_params(body)
    assert (params.seed, params.response_format) == (5, {"type": "json_object"})
    chat = decode_body(json.dumps({"model": "m", "messages": [], "format": schema,
                                   "options": {"seed": 9}}).encode(), ollama_api.ChatBody)  # fmt: skip
    params = ollama_api.chat_params(chat)
    assert params.seed == 9
    assert params.response_format == {"type": "json_schema",
                                      "json_schema": {"name": "response", "schema": schema}}
    gen = decode_body(b'{"model": "m", "prompt": "p", "format": "json"}', ollama_api.GenerateBody)
    assert ollama_api.generate_params(gen).response_format == {"type": "json_object"}
    with pytest.raises(BadRequest, match="format must be"):
        ollama_api.response_format("yaml")
