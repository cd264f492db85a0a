"""Routing's other faces: ``route.complete``, the fair queue, ``classify`` and ``resolve``,
Serena's context, sessions, compaction, status and routerctl's ``ask``, ``classify`` and
``resolve``. Fixtures: conftest.py here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fakes import FakeModel, Script
from fakes.serena import FakeSerena

from routerd.shell import sessions, stats

# --- route.complete ---------------------------------------------------------------------------


async def test_route_complete_returns_the_whole_answer(rk: Any, setup: Any, connect: Any) -> None:
    setup.first.script = Script(chunks=["Hello", ", ", "world"])
    wire = await connect(setup.app)
    reply = await wire.call(1, "route.complete", {"query": rk.QUERY})
    assert reply["type"] == "result", reply
    result = reply["result"]
    assert result["text"] == "Hello, world" and result["finish_reason"] == "stop"
    assert result["selected"]["service"] == "ollama"


async def test_route_complete_falls_back_even_mid_answer(rk: Any, setup: Any, connect: Any) -> None:
    # Nothing reached the client yet, so a broken answer is not the end of it.
    setup.first.script = Script(chunks=["partial ", "answer"], fail_after_chunks=1)
    setup.second.script = Script(chunks=["whole ", "answer"])
    wire = await connect(setup.app)
    reply = await wire.call(1, "route.complete", {"query": rk.QUERY})
    result = reply["result"]
    assert result["text"] == "whole answer" and result["service"] == "llamacpp"
    assert result["attempts"][0]["service"] == "ollama"


# --- the fair queue ------------------------------------------------------------------------------


async def test_two_requests_on_a_capacity_one_model_wait_their_turn(
    rk: Any, setup: Any, connect: Any
) -> None:
    # Ollama runs one request per model at a time: the second waits in routerd's queue
    # instead of being sent (and answered 503 "server busy" by a real Ollama).
    setup.first.script = Script(chunks=["a", "b", "c"], chunk_delay=0.2)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, setup.first.active)
            await setup.first.wait_until(lambda: True)
            await trio.sleep(0.01)

    wires = [await connect(setup.app), await connect(setup.app)]
    finals: list[dict[str, Any]] = []

    async def one(wire: Any) -> None:
        finals.append(
            (await rk.route(wire, 1, {"query": rk.QUERY, "model": "qwen2.5-coder:7b"}))[1]
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as inner:
            for wire in wires:
                inner.start_soon(one, wire)
        nursery.cancel_scope.cancel()
    assert [f["data"]["finish_reason"] for f in finals] == ["stop", "stop"]
    assert most == 1
    assert len(rk.chat_requests(setup.first)) == 2


async def timed_events(wire: Any, rid: int, params: dict[str, Any]) -> list[tuple[str, float]]:
    """``route``'s events (final included) with the trio time each arrived."""
    await wire.request(rid, "route", params)
    out: list[tuple[str, float]] = []
    while True:
        msg = await wire.recv(timeout=10.0)
        name = msg.get("event") if msg["type"] == "event" else msg["type"]
        out.append((name, trio.current_time()))
        if msg["type"] != "event" or msg["event"] == "end":
            return out


async def test_selected_arrives_while_a_slow_model_is_still_thinking(
    rk: Any, setup: Any, connect: Any
) -> None:
    """``selected`` goes out with the first chunk when that comes at once, and no later than
    moments after the request went to the server when it does not."""
    setup.first.script = Script(chunks=["late"], first_token_delay=1.0)
    wire = await connect(setup.app)
    events = await timed_events(wire, 1, {"query": rk.QUERY, "model": "qwen2.5-coder:7b"})
    times = dict(reversed(events))  # the first arrival of each
    assert [e for e, _ in events][:2] == ["selected", "chunk"]
    assert times["chunk"] - times["selected"] > 0.8


async def test_selected_arrives_before_a_wait_for_a_queue_slot(
    rk: Any, setup: Any, connect: Any
) -> None:
    """A request that must wait for a busy model is told which model it waits for at once."""
    setup.first.script = Script(chunks=["a", "b"], chunk_delay=0.5)
    first, second = await connect(setup.app), await connect(setup.app)
    params = {"query": rk.QUERY, "model": "qwen2.5-coder:7b"}
    ends: dict[str, float] = {}
    selected_at: list[float] = []

    async def hold() -> None:
        events = await timed_events(first, 1, params)
        ends["first"] = dict(events)["end"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await setup.first.wait_until(lambda: setup.first.active == 1)
        started = trio.current_time()
        events = await timed_events(second, 1, params)
        selected_at = [t for e, t in events if e == "selected"]
    assert selected_at and selected_at[0] - started < 0.3  # not after the first one's 1 s
    assert ends["first"] - started > 0.5
    assert events[0][0] == "selected" and events[-1][0] == "end"


async def test_seed_and_response_format_reach_the_model_server(
    rk: Any, setup: Any, connect: Any
) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    wire = await connect(setup.app)
    params = {"query": rk.QUERY, "model": "qwen2.5-coder:7b", "seed": 42,
              "response_format": {"type": "json_schema",
                                  "json_schema": {"name": "person", "schema": schema}}}  # fmt: skip
    _, final = await rk.route(wire, 1, params)
    assert final["event"] == "end", final
    sent = setup.first.last("/api/chat").json
    assert sent["format"] == schema and sent["options"]["seed"] == 42
    _, refused = await rk.route(wire, 2, {"query": rk.QUERY, "response_format": {"type": "yaml"}})
    assert refused["type"] == "error" and refused["code"] == "bad_request", refused
    assert "response_format.type" in refused["message"]


# --- statistics ------------------------------------------------------------------------------


async def test_attempts_and_requests_are_counted(start_routing: Any, connect: Any, rk: Any) -> None:
    s = await start_routing(with_stats=True)
    s.first.script = Script(fail_before_first_token="server_error")
    wire = await connect(s.app)
    _, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["event"] == "end"
    book = stats.stats_of(s.app).book
    assert book.routes["ok"] == 1
    first = book.series("ollama", "qwen2.5-coder:7b")
    second = book.series("llamacpp", "qwen2.5-coder-7b-instruct")
    assert first.outcomes["error"] == 1 and first.error_classes == {"http_5xx": 1}
    assert second.outcomes["ok"] == 1 and second.first_token.count == 1


# --- classify and resolve --------------------------------------------------------------------------


async def test_classify_and_resolve(rk: Any, setup: Any, connect: Any) -> None:
    wire = await connect(setup.app)
    reply = await wire.call(1, "classify", {"text": "Why is this function slow? Profile it."})
    result = reply["result"]
    assert result["category"] in rk.CATEGORIES and 0 <= result["confidence"] <= 1
    assert result["signals"]
    reply = await wire.call(2, "classify", {"text": "", "min_confidence": 2})
    assert reply["code"] == "bad_request"
    reply = await wire.call(3, "resolve", {"names": ["qwen2.5-coder:7b", "no-such-thing"]})
    results = reply["result"]["results"]
    assert results[0]["name"] == "qwen2.5-coder:7b"
    assert results[0]["model_id"] and results[0]["context_length"] > 0
    assert results[1]["model_id"] is None and results[1]["reason"]


# --- Serena ---------------------------------------------------------------------------------------


async def test_without_serena_the_request_is_routed_and_says_so(
    rk: Any, setup: Any, connect: Any
) -> None:
    wire = await connect(setup.app)
    params = {"query": "Rename area() to surface()", "file_context": {"file": "shapes.py"}}
    events, final = await rk.route(wire, 1, params)
    assert final["event"] == "end"
    (selected,) = rk.named(events, "selected")
    assert selected["serena"] == {"used": False, "reason": "Serena is not part of this daemon"}


async def test_serena_context_goes_into_the_prompt(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_routing(serena_fake=FakeSerena())
    proj = str(Path(s.socket).parent / "proj")
    query = "Rename area to surface everywhere."
    params = {
        "query": query,
        "file_context": {"file": f"{proj}/geometry/shapes.py", "line": 11, "character": 8},
    }
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, params)  # Serena starts on the way, within budget
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    info = selected["serena"]
    assert info["used"] is True and info["workspace"] == proj and info["tokens"] > 0
    sent = s.first.last("/api/chat").json["messages"]
    assert sent[-1]["content"].startswith(query + "\n\n")
    assert "area" in sent[-1]["content"][len(query) :]
    assert "Serena (semantic code tools): available" in sent[0]["content"]


async def test_a_session_id_without_sessions_is_answered_and_flagged(
    rk: Any, setup: Any, connect: Any
) -> None:
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY, "session_id": "new"})
    (selected,) = rk.named(events, "selected")
    assert selected["session"]["kept"] is False and selected["session"]["id"] == "new"
    assert "not part of this daemon" in selected["session"]["reason"]
    assert final["event"] == "end"


async def test_a_session_keeps_the_conversation(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_routing(with_sessions=True)
    manager = sessions.sessions_of(s.app)
    s.first.script = Script(chunks=["def add(a, b): ", "return a + b"])
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY, "session_id": "new"})
    sid = final["data"]["session_id"]
    assert len(sid) == 32
    # The turn was stored before the end event went out.
    stored = manager.readable(sid, os.getuid())
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    assert stored.messages[1].content == "def add(a, b): return a + b"
    (selected,) = rk.named(events, "selected")
    assert selected["session"] == {"id": sid, "kept": True, "new": True, "history": 0}
    s.first.script = Script(chunks=["Now with types."])
    events, final = await rk.route(wire, 2, {"query": "Add type hints.", "session_id": sid})
    assert final["data"]["session_id"] == sid
    sent = s.first.last("/api/chat").json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == rk.QUERY and sent[3]["content"] == "Add type hints."
    assert "air-gapped" in sent[0]["content"]  # the session's own system prompt


async def test_a_cut_off_turn_is_stored_partial(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_routing(with_sessions=True)
    s.first.script = Script(chunks=["one ", "two ", "three"], fail_after_chunks=1)
    wire = await connect(s.app)
    _, final = await rk.route(wire, 1, {"query": rk.QUERY, "session_id": "new"})
    assert final["data"]["finish_reason"] == "incomplete"
    stored = sessions.sessions_of(s.app).readable(final["data"]["session_id"], os.getuid())
    assert stored.partial_turns
    assert stored.messages[-1].content == "one "


async def test_a_malformed_session_id_is_refused(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_routing(with_sessions=True)
    wire = await connect(s.app)
    _, final = await rk.route(wire, 1, {"query": rk.QUERY, "session_id": "not-an-id"})
    assert final["type"] == "error" and final["code"] == "bad_request"
    assert "session id" in final["message"]


# --- status ------------------------------------------------------------------------------------------


async def test_status_shows_the_queue(setup: Any, connect: Any) -> None:
    wire = await connect(setup.app)
    reply = await wire.call(1, "status")
    component = reply["result"]["components"]["routing"]
    assert component["in_flight"] == 0 and component["waiting"] == 0
    assert msgspec.json.encode(component)


# --- a conversation too long for every window ------------------------------------------------------


async def test_a_long_conversation_is_compacted_to_fit(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    small = FakeModel("qwen2.5-coder:7b", context_length=2048, max_context_length=2048,
                      family="qwen2", parameter_size="7.6B")  # fmt: skip
    s = await start_routing(
        first_models=[small],
        second_models=[rk.qwen("qwen2.5-coder-7b-instruct", ctx=2048)],
    )
    history: list[dict[str, Any]] = []
    for i in range(30):
        history.append({"role": "user", "content": f"Question {i}: " + "explain the parser " * 20})
        history.append({"role": "assistant", "content": f"Answer {i}: " + "it reads tokens " * 20})
    history.append({"role": "user", "content": "Now write the function."})
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"messages": history, "category": "coding"})
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected.get("compacted") is True, selected
    assert selected["level"] == "REDUCED_CONTEXT"
    assert selected["prompt_tokens"] <= 2048 - 256
    sent = s.first.last("/api/chat").json["messages"]
    assert len(sent) < len(history)
    assert sent[-1] == {"role": "user", "content": "Now write the function."}
    assert any(m["role"] == "system" for m in sent)  # the summary of what was folded


# --- routerctl ------------------------------------------------------------------------------------


async def routerctl(setup: Any, *argv: str) -> int:
    from routerd_client.cli import main

    code: int = await trio.to_thread.run_sync(main, ["--socket", setup.socket, *argv])
    return code


async def test_routerctl_ask_streams_and_says_who_answered(
    setup: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    setup.first.script = Script(chunks=["def add", "(a, b):", " return a + b"])
    assert await routerctl(setup, "ask", "Write", "an", "add", "function") == 0
    out, err = capfd.readouterr()
    assert out == "def add(a, b): return a + b\n"
    assert "answered by qwen2.5-coder:7b on ollama (coding" in err
    assert await routerctl(setup, "ask", "--json", "--category", "reasoning", "Why?") == 0
    record = msgspec.json.decode(capfd.readouterr()[0])
    assert record["text"] == "def add(a, b): return a + b" and record["category"] == "reasoning"


async def test_routerctl_ask_reports_fallback_and_incomplete(
    setup: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    setup.first.script = Script(fail_before_first_token="server_error")
    setup.second.script = Script(chunks=["half ", "an answer"], fail_after_chunks=1)
    assert await routerctl(setup, "ask", "Write", "code") == 1
    out, err = capfd.readouterr()
    assert out == "half \n"
    assert "http_5xx" in err and "trying qwen2.5-coder-7b-instruct on llamacpp" in err
    assert "the answer is incomplete: llamacpp/qwen2.5-coder-7b-instruct stopped" in err
    assert await routerctl(setup, "ask", "--model", "gpt-5", "hi") == 1
    assert "not_found: no service offers the model 'gpt-5'" in capfd.readouterr()[1]


async def test_routerctl_classify_and_resolve(
    setup: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await routerctl(setup, "classify", "Write", "a", "binary", "search") == 0
    assert capfd.readouterr()[0].startswith("coding (confidence ")
    assert await routerctl(setup, "resolve", "--json", "qwen2.5-coder:7b", "mystery") == 0
    rows = msgspec.json.decode(capfd.readouterr()[0])
    assert [r["name"] for r in rows] == ["qwen2.5-coder:7b", "mystery"]
    assert rows[0]["model_id"] is not None and rows[1]["model_id"] is None
    assert await routerctl(setup, "resolve", "qwen2.5-coder:7b") == 0
    out = capfd.readouterr()[0]
    assert out.splitlines()[0].split() == ["NAME", "MODEL", "ID", "CONTEXT", "WHY"]


async def test_a_compacted_session_keeps_the_question_without_serenas_context(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    """Serena's context is for the turn it was fetched for: when the turn is compacted, the
    session stores the question as asked, not as enriched (it would go stale, and fill the
    window turn after turn)."""
    small = FakeModel("qwen2.5-coder:7b", context_length=2048, max_context_length=2048,
                      family="qwen2", parameter_size="7.6B")  # fmt: skip
    s = await start_routing(
        with_sessions=True,
        serena_fake=FakeSerena(),
        first_models=[small],
        second_models=[rk.qwen("qwen2.5-coder-7b-instruct", ctx=2048)],
    )
    proj = str(Path(s.socket).parent / "proj")
    history: list[dict[str, Any]] = []
    for i in range(30):
        history.append({"role": "user", "content": f"Question {i}: " + "explain the parser " * 20})
        history.append({"role": "assistant", "content": f"Answer {i}: " + "it reads tokens " * 20})
    query = "Rename area to surface everywhere."
    history.append({"role": "user", "content": query})
    params = {
        "messages": history,
        "session_id": "new",
        "category": "coding",
        "file_context": {"file": f"{proj}/geometry/shapes.py", "line": 11, "character": 8},
    }
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, params)
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["serena"]["used"] is True and selected.get("compacted") is True, selected
    sent = s.first.last("/api/chat").json["messages"]
    assert sent[-1]["content"].startswith(query + "\n\n")  # the model saw the context
    stored = sessions.sessions_of(s.app).readable(final["data"]["session_id"], os.getuid())
    assert [m.role for m in stored.messages[-2:]] == ["user", "assistant"]
    assert stored.messages[-2].content == query
    assert len(stored.messages) < len(history)  # the compaction itself was kept
