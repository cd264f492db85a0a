"""Near the window's edge, routing asks the real llama-server for an exact count
(``sessions.exact_tokenize``): the count decides, agrees with what the server then reports in
``usage.prompt_tokens``, and calibrates the model's estimates."""

from __future__ import annotations

from typing import Any

import pytest

from routerd.shell.routing import router_of
from routerd_client.aio import AsyncClient

pytestmark = pytest.mark.slow

WINDOW, RESERVE = 1024, 128  # the fixture's --ctx-size; routing_daemon's reserve_for_answer
SENTENCE = (
    "The router keeps a session for every editor connection and compacts it when the "
    "context window fills up, keeping the system prompt and the latest messages intact. "
)


async def test_an_exact_count_decides_near_the_edge(routing_daemon: Any, llama_server: Any) -> None:
    app = await routing_daemon(llama_server.base_url)
    # About 3300 bytes of prose: over the budget (896) by the planning estimate, within 15%
    # of it by the model's own, under it by SmolLM2's tokenizer.
    messages = [
        {"role": "system", "content": "You answer questions about routerd."},
        {"role": "user", "content": SENTENCE * 9},
        {"role": "assistant", "content": SENTENCE * 8},
        {"role": "user", "content": SENTENCE * 3 + "Say yes."},
    ]
    assert app.socket_path is not None
    events: dict[str, Any] = {}
    params = {"messages": messages, "category": "coding", "max_tokens": 4}
    async with (
        AsyncClient(app.socket_path, timeout=120) as client,
        client.stream("route", params) as stream,
    ):
        async for event in stream:
            events.setdefault(event.event, event.data)
        end = stream.end_data
    selected = events["selected"]
    assert selected["prompt_exact"] is True, selected
    assert not selected.get("compacted"), selected
    assert selected["prompt_tokens"] <= WINDOW - RESERVE
    # The count (the server's for the text, routerd's for the template) matches the server's.
    reported = end["prompt_tokens"]
    assert reported is not None
    assert abs(selected["prompt_tokens"] - reported) <= 0.03 * reported, (selected, reported)
    calib = router_of(app).calibration(selected["model"])
    assert calib is not None and calib.samples >= 1
    app.request_shutdown()
