"""The route executor against the fakes: the answer and which model gave it, fallback before
the first byte (refused, 500, garbage, hang, busy), ``incomplete`` after it, cancellation
reaching the model server, and the errors that come before any attempt. Fixtures:
conftest.py here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from fakes import FakeModel, FakeServer, Script

from routerd.shell import routing

# --- the answer -----------------------------------------------------------------------------


async def test_route_streams_the_answer_and_says_which_model(
    rk: Any, setup: Any, connect: Any
) -> None:
    setup.first.script = Script(chunks=["def add", "(a, b):", " return a + b"])
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["type"] == "event" and final["event"] == "end", final
    assert next(e for e, _ in events) == "selected"
    (selected,) = rk.named(events, "selected")
    assert (selected["service"], selected["model"]) == ("ollama", "qwen2.5-coder:7b")
    assert selected["category"] == "coding" and selected["category_source"] == "classified"
    # Not on the category's configured lists: a model of the database's own choosing.
    assert selected["attempt"] == 1 and selected["level"] == "FALLBACK_MODELS"
    assert selected["explain"] and selected["explain"][0].startswith("category coding")
    assert rk.text_of(events) == "def add(a, b): return a + b"
    assert rk.named(events, "usage") == [{"prompt_tokens": final["data"]["prompt_tokens"],
                                       "completion_tokens": 3}]  # fmt: skip
    end = final["data"]
    assert end["finish_reason"] == "stop"
    assert (end["service"], end["model"], end["requested_model"]) == (
        "ollama", "qwen2.5-coder:7b", "qwen2.5-coder:7b"
    )  # fmt: skip
    assert end["fallback_level"] == 1 and "attempts" not in end
    assert end["first_token_s"] >= 0 and end["total_s"] >= end["first_token_s"]
    # What the model server got: routerd's system prompt, the query, a fixed window.
    body = setup.first.last("/api/chat").json
    assert body["messages"][0]["role"] == "system"
    assert "air-gapped" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": rk.QUERY}
    assert body["options"]["num_ctx"] == selected["window_tokens"]
    assert rk.chat_requests(setup.second) == []


async def test_the_servers_prompt_counts_calibrate_the_estimates(
    rk: Any, setup: Any, connect: Any
) -> None:
    wire = await connect(setup.app)
    for rid in range(3):
        _, final = await rk.route(wire, rid + 1, {"query": rk.QUERY})
        assert final["data"]["prompt_tokens"] > 0
    cal = routing.router_of(setup.app).calibrations["qwen2.5-coder:7b"]
    assert cal.samples + cal.rejected == 3


async def test_messages_pass_through_untouched(rk: Any, setup: Any, connect: Any) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Explain list comprehensions."}]},
    ]
    wire = await connect(setup.app)
    _, final = await rk.route(wire, 1, {"messages": messages, "category": "documentation",
                                     "max_tokens": 50, "temperature": 0.2})  # fmt: skip
    assert final["event"] == "end"
    assert final["data"]["category"] == "documentation"
    body = setup.first.last("/api/chat").json
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Explain list comprehensions."},  # Ollama's flattening
    ]
    assert body["options"]["num_predict"] == 50 and body["options"]["temperature"] == 0.2


async def test_the_model_the_answer_names_is_recorded(rk: Any, setup: Any, connect: Any) -> None:
    # llama.cpp answers any model name with the model it has loaded.
    setup.first.state = "error"
    setup.second.models[0].id = "/models/other-model.gguf"
    wire = await connect(setup.app)
    _events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    end = final["data"]
    assert end["service"] == "llamacpp"
    assert end["requested_model"] == "qwen2.5-coder-7b-instruct"
    assert end["model"] == "/models/other-model.gguf"
    assert setup.audit.events[-1].model == "/models/other-model.gguf"


# --- fallback before the first byte -----------------------------------------------------------


async def _down(fake: FakeServer) -> str:
    await fake.down()
    return "refused"


async def _error(fake: FakeServer) -> str:
    fake.script = Script(fail_before_first_token="server_error")
    return "http_5xx"


async def _garbage(fake: FakeServer) -> str:
    fake.script = Script(garbage_stream=True)
    return "bad_response"


async def _hang(fake: FakeServer) -> str:
    fake.script = Script(hang_before_first_token=True)
    return "timeout_first_token"


async def _busy(fake: FakeServer) -> str:
    fake.script = Script(fail_before_first_token="queue_full")
    return "busy"


@pytest.mark.parametrize("breakage", [_down, _error, _garbage, _hang, _busy])
async def test_fallback_to_the_next_server_before_the_first_byte(
    rk: Any, setup: Any, connect: Any, breakage: Callable[[FakeServer], Any]
) -> None:
    error = await breakage(setup.first)
    setup.second.script = Script(chunks=["from ", "the ", "second"])
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["event"] == "end", final
    selected = rk.named(events, "selected")
    assert [(s["service"], s["attempt"]) for s in selected] == [("ollama", 1), ("llamacpp", 2)]
    assert error in selected[1]["previous_error"]
    assert "explain" not in selected[1]
    assert rk.text_of(events) == "from the second"
    # Both selections came before the first chunk.
    assert [e for e, _ in events].index("chunk") > [e for e, _ in events].index("selected", 1)
    end = final["data"]
    assert end["service"] == "llamacpp" and end["finish_reason"] == "stop"
    assert [(a["service"], a["error"]) for a in end["attempts"]] == [("ollama", error)]
    record = setup.audit.events[-1]
    assert record.success and record.service == "llamacpp" and record.details is not None
    assert record.details["attempts"] == 2
    if error == "refused":  # the registry heard of it: no more requests go there
        assert setup.registry.service("ollama").state == "offline"  # type: ignore[union-attr]


async def test_fallback_to_another_model(rk: Any, start_routing: Any, connect: Any) -> None:
    s = await start_routing(
        first_models=[rk.qwen("qwen2.5-coder:7b"), rk.qwen("llama3.2:latest")],
    )
    s.first.push_script(Script(fail_before_first_token="server_error"))  # the first call only
    s.second.script = Script(fail_before_first_token="server_error")
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["event"] == "end", final
    tried = [(x["service"], x["model"]) for x in rk.named(events, "selected")]
    assert tried == [
        ("ollama", "qwen2.5-coder:7b"),
        ("llamacpp", "qwen2.5-coder-7b-instruct"),
        ("ollama", "llama3.2:latest"),
    ]
    assert final["data"]["model"] == "llama3.2:latest"


async def test_every_server_failing_is_one_clear_error(rk: Any, setup: Any, connect: Any) -> None:
    setup.first.script = Script(fail_before_first_token="server_error")
    setup.second.script = Script(fail_before_first_token="server_error")
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["type"] == "error" and final["code"] == "unavailable", final
    assert "every model failed" in final["message"]
    assert "ollama/qwen2.5-coder:7b: http_5xx" in final["message"]
    assert [a["service"] for a in final["data"]["attempts"]] == ["ollama", "llamacpp"]
    assert len(rk.named(events, "selected")) == 2 and rk.named(events, "chunk") == []
    record = setup.audit.events[-1]
    assert not record.success and record.error is not None and "every model" in record.error


# --- after the first byte ----------------------------------------------------------------------


async def test_a_failure_mid_stream_ends_incomplete(rk: Any, setup: Any, connect: Any) -> None:
    setup.first.script = Script(chunks=["one ", "two ", "three ", "four"], fail_after_chunks=2)
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["event"] == "end", final
    end = final["data"]
    assert end["finish_reason"] == "incomplete"
    assert end["reason"].startswith("ollama/qwen2.5-coder:7b stopped: ")
    assert rk.text_of(events) == "one two "
    assert len(rk.named(events, "selected")) == 1
    assert rk.chat_requests(setup.second) == []  # never retried elsewhere
    assert setup.audit.events[-1].success is False


async def test_a_stall_mid_stream_ends_incomplete_after_the_idle_timeout(
    rk: Any, setup: Any, connect: Any
) -> None:
    setup.first.script = Script(chunks=["a", "b", "c"], chunk_delay=3.0)  # idle is 1 s
    wire = await connect(setup.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY})
    assert final["data"]["finish_reason"] == "incomplete"
    assert "timeout_idle" in final["data"]["reason"]
    assert rk.text_of(events) == "a"


async def test_a_slow_drip_streams_every_piece_as_it_comes(
    rk: Any, setup: Any, connect: Any
) -> None:
    setup.first.script = Script(chunks=["a", "b", "c", "d"], chunk_delay=0.3)  # idle is 1 s
    wire = await connect(setup.app)
    await wire.request(1, "route", {"query": rk.QUERY})
    arrivals: list[float] = []
    while True:
        msg = await wire.recv(timeout=10.0)
        if msg["type"] == "event" and msg["event"] == "chunk":
            arrivals.append(trio.current_time())
        if msg["type"] != "event" or msg["event"] == "end":
            break
    assert msg["data"]["finish_reason"] == "stop"
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] >= 0.6  # streamed as generated, not all at the end


# --- cancellation --------------------------------------------------------------------------------


async def test_cancelling_closes_the_upstream_request(rk: Any, setup: Any, connect: Any) -> None:
    setup.first.script = Script(chunks=["x"] * 50, chunk_delay=0.1)
    wire = await connect(setup.app)
    await wire.request(1, "route", {"query": rk.QUERY})
    while (await wire.recv())["event"] != "chunk":
        pass
    await wire.send({"type": "cancel", "id": 1})
    while True:
        msg = await wire.recv()
        if msg["type"] == "error":
            break
    assert msg["code"] == "cancelled"
    await setup.first.wait_until(lambda: setup.first.disconnects == 1)
    assert setup.first.completed == 0
    assert setup.audit.events[-1].error == "cancelled"


async def test_a_client_that_disconnects_closes_the_upstream_request(
    rk: Any, setup: Any, connect: Any
) -> None:
    setup.first.script = Script(chunks=["x"] * 50, chunk_delay=0.1)
    wire = await connect(setup.app)
    await wire.request(1, "route", {"query": rk.QUERY})
    while (await wire.recv())["event"] != "chunk":
        pass
    await wire.aclose()
    await setup.first.wait_until(lambda: setup.first.disconnects == 1)


# --- errors before any attempt -----------------------------------------------------------------


async def test_an_explicit_model_nobody_offers_is_a_clear_error(
    rk: Any, setup: Any, connect: Any
) -> None:
    wire = await connect(setup.app)
    _, final = await rk.route(wire, 1, {"query": rk.QUERY, "model": "llama3.3:70b"})
    assert final["type"] == "error" and final["code"] == "not_found"
    assert "'llama3.3:70b'" in final["message"]
    assert "available: qwen2.5-coder-7b-instruct, qwen2.5-coder:7b" in final["message"]
    assert rk.chat_requests(setup.first) == [] and rk.chat_requests(setup.second) == []


async def test_an_explicit_model_is_never_replaced(
    rk: Any, start_routing: Any, connect: Any
) -> None:
    s = await start_routing(
        first_models=[
            rk.qwen("qwen2.5-coder:7b"),
            FakeModel("llama3.2:latest", context_length=4096),
        ],
    )
    s.first.script = Script(fail_before_first_token="server_error")
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY, "model": "llama3.2"})
    assert final["type"] == "error" and final["code"] == "unavailable", final
    assert [(x["service"], x["model"]) for x in rk.named(events, "selected")] == [
        ("ollama", "llama3.2:latest")
    ]
    assert rk.chat_requests(s.second) == []


async def test_an_explicit_model_may_run_on_another_server(
    rk: Any, setup: Any, connect: Any
) -> None:
    # Both names are the database's qwen2.5-coder-7b: the same model on two servers.
    setup.second.script = Script(fail_before_first_token="server_error")
    wire = await connect(setup.app)
    events, final = await rk.route(
        wire, 1, {"query": rk.QUERY, "model": "qwen2.5-coder-7b-instruct"}
    )
    assert final["event"] == "end", final
    assert [x["service"] for x in rk.named(events, "selected")] == ["llamacpp", "ollama"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "nothing to route"),
        ({"query": "x", "messages": [{"role": "user", "content": "y"}]}, "not both"),
        ({"messages": [{"role": "robot", "content": "y"}]}, "messages[0].role"),
        ({"query": "x", "category": "poetry"}, "category must be one of"),
        ({"query": "x", "temperature": -1}, "temperature"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    rk: Any, setup: Any, connect: Any, params: dict[str, Any], words: str
) -> None:
    wire = await connect(setup.app)
    _, final = await rk.route(wire, 1, params)
    assert final["type"] == "error" and final["code"] == "bad_request"
    assert words in final["message"]
