"""Fitting a prompt to an attempt: summaries by ``sessions.summary_model`` (and the fallback to
the extractive one), and exact counts from llama.cpp servers near the budget's edge."""

from __future__ import annotations

import os
from typing import Any

from fakes import FakeModel, Script
from fakes.llamacpp import fake_token_count

from routerd.shell import sessions
from routerd.shell.routing import router_of

SUMMARY_MODEL = "qwen2.5-coder:0.5b"
SUMMARY_TEXT = "- Decided to keep the parser in parse.py; read_tokens() stays as it is."
LATEST = "Now write the function."


def small(name: str, params: str = "7.6B") -> FakeModel:
    return FakeModel(name, context_length=2048, max_context_length=2048, family="qwen2",
                     parameter_size=params)  # fmt: skip


def long_history() -> list[dict[str, Any]]:
    """A conversation far over a 2048-token window."""
    history: list[dict[str, Any]] = []
    for i in range(30):
        history.append({"role": "user", "content": f"Question {i}: " + "explain the parser " * 20})
        history.append({"role": "assistant", "content": f"Answer {i}: " + "it reads tokens " * 20})
    history.append({"role": "user", "content": LATEST})
    return history


async def start_small(start_routing: Any, rk: Any, extra: str = "", **options: Any) -> Any:
    """Both servers with 2048-token windows; Ollama also offers the small summary model."""
    return await start_routing(
        first_models=[small("qwen2.5-coder:7b"), small(SUMMARY_MODEL, "494M")],
        second_models=[rk.qwen("qwen2.5-coder-7b-instruct", ctx=2048)],
        extra=extra,
        **options,
    )


def summary_requests(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path == "/api/chat"
            and r.json["model"] == SUMMARY_MODEL]  # fmt: skip


def sent_to_7b(fake: Any) -> list[dict[str, Any]]:
    (last,) = [r for r in fake.requests if r.path == "/api/chat"
               and r.json["model"] == "qwen2.5-coder:7b"][-1:]  # fmt: skip
    messages: list[dict[str, Any]] = last.json["messages"]
    return messages


ROUTE = {"messages": long_history(), "model": "qwen2.5-coder:7b"}


# --- summaries by a small local model ----------------------------------------------------------


async def test_the_summary_model_writes_the_summary(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_small(
        start_routing, rk, f'[sessions]\nsummary_model = "{SUMMARY_MODEL}"', with_sessions=True
    )
    s.first.push_script(Script(chunks=[SUMMARY_TEXT]), Script(chunks=["def f(): ..."]))
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {**ROUTE, "session_id": "new"})
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["compacted"] is True
    assert selected["summary_source"] == "model"
    assert selected["summary_model"] == SUMMARY_MODEL
    # The small model was asked with the core's instructions and the folded turns...
    (asked,) = summary_requests(s.first)
    instructions, transcript = asked.json["messages"]
    assert instructions["role"] == "system" and "Summarise" in instructions["content"]
    assert "Question 0:" in transcript["content"] and LATEST not in transcript["content"]
    # ...and its summary stands for them in what the answering model got.
    sent = sent_to_7b(s.first)
    summaries = [m for m in sent if m["role"] == "system" and SUMMARY_TEXT in m["content"]]
    assert len(summaries) == 1
    assert sent[-1] == {"role": "user", "content": LATEST}
    # The session's record says who wrote it.
    stored = sessions.sessions_of(s.app).readable(final["data"]["session_id"], os.getuid())
    (compaction,) = stored.compactions
    assert compaction.summary_source == "model" and compaction.summarised > 0


async def test_a_failing_summary_model_falls_back_to_the_extractive_summary(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_small(start_routing, rk, f'[sessions]\nsummary_model = "{SUMMARY_MODEL}"')
    wire = await connect(s.app)
    for rid, failing in enumerate(
        (Script(fail_before_first_token="server_error"), Script(hang_before_first_token=True),
         Script(chunks=["   "])),  # an empty answer
        1,
    ):  # fmt: skip
        s.first.push_script(failing, Script(chunks=["def f(): ..."]))
        events, final = await rk.route(wire, rid, ROUTE)
        assert final["event"] == "end", final
        (selected,) = rk.named(events, "selected")
        assert selected["compacted"] is True
        assert selected["summary_source"] == "extractive", failing
        assert "summary_model" not in selected
        assert any("[Summary of earlier conversation" in m["content"]
                   for m in sent_to_7b(s.first))  # fmt: skip
    assert len(summary_requests(s.first)) == 3


async def test_an_unavailable_summary_model_is_not_waited_for(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_small(start_routing, rk, '[sessions]\nsummary_model = "no-such-model:1b"')
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, ROUTE)
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["summary_source"] == "extractive"
    assert len(rk.chat_requests(s.first)) == 1  # only the answer


async def test_without_a_summary_model_nothing_is_asked(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_small(start_routing, rk)
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, ROUTE)
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["summary_source"] == "extractive"
    assert summary_requests(s.first) == []


# --- exact counts near the edge ------------------------------------------------------------------

# On the llama.cpp fake (window 8192, 256 reserved for the answer: a budget of 7936 tokens),
# "word " is 5 bytes: routerd estimates 5 / 3.5 tokens, the fake's tokenizer counts one.
EXPLICIT = "qwen2.5-coder-7b-instruct"  # its reported name: the llama.cpp fake first


def edge_conversation(words: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "word " * words},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": LATEST},
    ]


def tokenized(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path == "/tokenize"]


async def start_llama(start_routing: Any, extra: str = "") -> Any:
    """Ollama offers only another model: the explicit one runs on the llama.cpp fake."""
    return await start_routing(first_models=[small(SUMMARY_MODEL, "494M")], extra=extra)


async def test_an_exact_count_spares_a_needless_compaction(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_llama(start_routing)
    wire = await connect(s.app)
    messages = edge_conversation(5600)  # estimated 8000+ tokens: over the budget
    events, final = await rk.route(wire, 1, {"messages": messages, "model": EXPLICIT})
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["service"] == "llamacpp"
    (asked,) = tokenized(s.second)
    text = asked.json["content"]
    assert text == "\n".join(m["content"] for m in messages)
    # The server's count (plus the template's framing) decides: it fits, nothing is cut.
    assert selected["prompt_exact"] is True and "compacted" not in selected
    assert fake_token_count(s.second, text) < selected["prompt_tokens"] < 7936
    sent = s.second.last("/v1/chat/completions").json["messages"]
    assert sent == messages
    # The count taught the estimate: this model's prose now counts lower.
    calib = router_of(s.app).calibration(EXPLICIT)
    assert calib is not None and calib.samples >= 1 and calib.scale < 1.0


async def test_an_exact_count_over_the_budget_compacts(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_llama(start_routing)
    s.second.options["bytes_per_token"] = 2.5  # a tokenizer denser than the estimate
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"messages": edge_conversation(5200),
                                             "model": EXPLICIT})  # fmt: skip
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert len(tokenized(s.second)) == 1
    assert selected["compacted"] is True  # the estimate (about 7450) alone would have sent it
    assert "prompt_exact" not in selected  # the figure is of the compacted prompt
    assert selected["prompt_tokens"] <= 7936


async def test_no_exact_count_when_turned_off(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_llama(start_routing, "[sessions]\nexact_tokenize = false")
    wire = await connect(s.app)
    events, _ = await rk.route(wire, 1, {"messages": edge_conversation(5600), "model": EXPLICIT})
    (selected,) = rk.named(events, "selected")
    assert selected["compacted"] is True and "prompt_exact" not in selected
    assert tokenized(s.second) == []


async def test_no_exact_count_far_from_the_edge(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_llama(start_routing)
    wire = await connect(s.app)
    events, _ = await rk.route(wire, 1, {"messages": edge_conversation(50), "model": EXPLICIT})
    (selected,) = rk.named(events, "selected")
    assert selected["service"] == "llamacpp" and "prompt_exact" not in selected
    assert tokenized(s.second) == []


async def test_a_server_without_tokenize_leaves_the_estimate(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_llama(start_routing)
    s.second.options["tokenize"] = False
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"messages": edge_conversation(5600),
                                             "model": EXPLICIT})  # fmt: skip
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert len(tokenized(s.second)) == 1
    assert selected["compacted"] is True and "prompt_exact" not in selected
