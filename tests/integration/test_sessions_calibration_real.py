"""Calibration converges on the real server's counts, and persists; exact counts from both real
llama.cpp-based servers agree."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from routerd.core.config import SessionsConfig
from routerd.core.context import Message, system_prompt
from routerd.core.sessions import needs_exact_count, token_family
from routerd.core.tokens import count_messages
from routerd.shell.sessions import SessionManager
from routerd.shell.tokenize import exact_count

pytestmark = pytest.mark.slow

REQUESTS = Path(__file__).parents[1] / "data" / "classify" / "requests.jsonl"
SYSTEM = system_prompt("Linux", "aider", "ready")
WINDOW = 1024  # the fixtures' --ctx-size


def texts() -> list[str]:
    every = [json.loads(line)["text"] for line in REQUESTS.read_text().splitlines() if line]
    return [t for t in every if 40 <= len(t) <= 1500]


async def prompt_tokens(client: httpx.AsyncClient, base: str, msgs: list[Message]) -> int:
    body = {"model": "smollm2", "max_tokens": 1, "temperature": 0,
            "messages": [{"role": m.role, "content": m.content} for m in msgs]}
    resp = await client.post(f"{base}/v1/chat/completions", json=body)
    resp.raise_for_status()
    count: int = resp.json()["usage"]["prompt_tokens"]
    return count


def mape(pairs: list[tuple[int, int]]) -> float:
    return statistics.fmean(abs(e - a) / a * 100 for e, a in pairs)


async def test_calibration_converges_on_the_real_servers_counts(
    llama_server: Any, tmp_path: Path
) -> None:
    corpus = texts()
    learn, held = corpus[0:60:2][:24], corpus[1:60:2][:16]
    async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
        chats = [[Message("system", SYSTEM), Message("user", t)] for t in learn + held]
        counts = [await prompt_tokens(client, llama_server.base_url, c) for c in chats]
    learn_chats, held_chats = chats[: len(learn)], chats[len(learn) :]
    learn_counts, held_counts = counts[: len(learn)], counts[len(learn) :]
    model = "SmolLM2-135M-Instruct"
    family = token_family(model)

    mgr = SessionManager(tmp_path, SessionsConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        before = mape([(count_messages(c, family, mgr.calibration(model)), n)
                       for c, n in zip(held_chats, held_counts, strict=True)])
        for c, n in zip(learn_chats, learn_counts, strict=True):
            mgr.observe_usage(model, c, n, window=WINDOW)
        learned = mgr.calibration(model)
        after = mape([(count_messages(c, family, learned), n)
                      for c, n in zip(held_chats, held_counts, strict=True)])
        nursery.cancel_scope.cancel()  # saves the calibration on the way out
    assert learned.samples >= 20
    assert after < before / 2, (before, after)
    assert after < 5.0, (before, after)

    again = SessionManager(tmp_path, SessionsConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        assert again.calibration(model) == learned
        nursery.cancel_scope.cancel()


async def test_exact_counts_agree_between_the_real_servers(
    llama_server: Any, llama_cpp_python_server: Any
) -> None:
    sample = texts()[:8]
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        for text in sample:
            a = await exact_count(client, llama_server.base_url, text)
            b = await exact_count(client, llama_cpp_python_server.base_url + "/v1", text,
                                  "llama-cpp-python")
            raw = await client.post(f"{llama_server.base_url}/tokenize", json={"content": text})
            assert a == len(raw.json()["tokens"]) > 0
            # Same model, same tokenizer; llama-cpp-python counts a BOS for models adding one.
            assert a is not None and b in (a, a + 1), text
        assert await exact_count(client, "http://127.0.0.1:9", "x") is None  # nothing there
    assert needs_exact_count(950, WINDOW) and not needs_exact_count(300, WINDOW)
