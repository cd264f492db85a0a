"""Token estimates against a real llama.cpp server, before and after calibration.

Starts llama-server (paths from ROUTERD_LLAMA_SERVER / ROUTERD_SMOLLM2_GGUF, else
``scripts/llama.sh env``) on a free loopback port, takes the coding requests of
``tests/data/classify/requests.jsonl`` (a seeded half to learn from, the other half held out)
and prints:

* per text (held out): the estimate's error against the exact ``/tokenize`` count, before
  calibration and after calibrating on the learning half three ways: from the prompt token
  counts the server reports for chat requests (``usage.prompt_tokens``: what routerd sees in
  production, ``observe_prompt``), from exact ``/tokenize`` counts of the request texts alone,
  and from ``/tokenize`` counts of the whole prompts' texts (what routerd asks for near a
  window's edge, ``sessions.exact_tokenize``; both ``observe_text``). Calibration has a scale
  for prose and one for code (``routerd.core.tokens.Calibration``), printed for each;
* per prompt (held out): ``count_messages`` of the whole chat routerd would send (its system
  prompt and the request) against the server's ``usage.prompt_tokens``, before and after;
* per conversation (held out): the same for multi-turn chats, also after calibrating on the
  learning half's own conversations (calibration learns the mix of prose and code it sees);
* how the usage-calibrated scale converges, observation by observation.

Error figures: mean absolute percentage error (MAPE), median and p90 of the absolute
percentage error, the bias (mean signed error; positive = the estimate is too high) and the
error of the sum over all texts (what a context budget of many messages sees).

    python bench/tokens.py [--limit N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import trio
from _figures import record

from routerd.core.context import Message, system_prompt
from routerd.core.sessions import token_family
from routerd.core.tokens import (
    Calibration,
    count_messages,
    count_text,
    observe_prompt,
    observe_text,
)
from routerd.shell.tokenize import exact_count

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = ROOT / "tests" / "data" / "classify" / "requests.jsonl"
CTX = 4096
LONG = 32  # texts this long (tokens) say something about the ratio; shorter ones mostly rounding
SYSTEM = system_prompt("Linux (Debian GNU/Linux 12)", "aider", "ready")


# --- the server -----------------------------------------------------------------------------


def llama_paths() -> tuple[str, str]:
    server = os.environ.get("ROUTERD_LLAMA_SERVER", "")
    model = os.environ.get("ROUTERD_SMOLLM2_GGUF", "")
    if not (server and model):
        out = subprocess.run(["bash", str(ROOT / "scripts" / "llama.sh"), "env"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        found = {}
        for line in out.splitlines():
            name, _, value = line.partition("=")
            found[name] = (shlex.split(value) or [""])[0]
        server = server or found.get("ROUTERD_LLAMA_SERVER", "")
        model = model or found.get("ROUTERD_SMOLLM2_GGUF", "")
    for path in (server, model):
        if not path or not Path(path).exists():
            sys.exit(f"missing {path or 'llama-server/model path'}: run scripts/llama.sh ensure")
    return server, model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def llama_server() -> Iterator[str]:
    server, model = llama_paths()
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [server, "--model", model, "--host", "127.0.0.1", "--port", str(port),
             "--threads", "1", "--threads-batch", "1", "--ctx-size", str(CTX)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, base, log)
            yield base
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                sys.exit("llama-server did not start:\n" + log.read().decode()[-2000:])
            try:
                if client.get(f"{base}/v1/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)


# --- measuring ------------------------------------------------------------------------------


class Sample:
    def __init__(self, text: str, tokens: int, prompt_tokens: int, chat_text_tokens: int) -> None:
        self.text = text
        self.tokens = tokens  # /tokenize, no special tokens
        self.prompt_tokens = prompt_tokens  # usage.prompt_tokens of [SYSTEM, text]
        self.chat_text_tokens = chat_text_tokens  # /tokenize of chat_text()

    def chat(self) -> list[Message]:
        return [Message("system", SYSTEM), Message("user", self.text)]

    def chat_text(self) -> str:
        """The prompt's texts as routerd asks a server to count them (``routing.fit``)."""
        return "\n".join(m.content for m in self.chat())


async def prompt_tokens(client: httpx.AsyncClient, base: str, msgs: Sequence[Message]) -> int:
    """The server's ``usage.prompt_tokens`` for a chat of ``msgs`` (one token generated)."""
    model = (await client.get(f"{base}/v1/models")).json()["data"][0]["id"]
    body = {"model": model, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": m.role, "content": m.content} for m in msgs]}
    resp = await client.post(f"{base}/v1/chat/completions", json=body)
    resp.raise_for_status()
    count: int = resp.json()["usage"]["prompt_tokens"]
    return count


async def measure(base: str, texts: Sequence[str]) -> tuple[str, list[Sample]]:
    out = []
    async with httpx.AsyncClient(timeout=120) as client:
        model = (await client.get(f"{base}/v1/models")).json()["data"][0]["id"]
        for text in texts:
            tokens = await exact_count(client, base, text)
            chat_text = await exact_count(client, base, f"{SYSTEM}\n{text}")
            assert tokens is not None and chat_text is not None
            chat = [Message("system", SYSTEM), Message("user", text)]
            out.append(Sample(text, tokens, await prompt_tokens(client, base, chat), chat_text))
    return Path(model).name, out


def conversations(samples: Sequence[Sample], size: int = 6) -> list[list[Message]]:
    """Multi-turn chats of ``size`` consecutive texts (alternately user and assistant) after
    the system prompt: what a session's context looks like."""
    chats = []
    for i in range(0, len(samples) - size + 1, size):
        msgs = [Message("system", SYSTEM)]
        for k, s in enumerate(samples[i : i + size]):
            msgs.append(Message("user" if k % 2 == 0 else "assistant", s.text))
        if msgs[-1].role == "assistant":
            msgs.append(Message("user", "go on"))
        chats.append(msgs)
    return chats


async def measure_chats(base: str, chats: Sequence[list[Message]]) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as client:
        return [await prompt_tokens(client, base, msgs) for msgs in chats]


def errors(pairs: Sequence[tuple[int, int]]) -> dict[str, float]:
    """(estimate, actual) pairs -> MAPE, median and p90 absolute % error, bias %, and the
    error of the sum (what a budget of many messages sees)."""
    rel = [(e - a) / a * 100 for e, a in pairs if a > 0]
    ab = sorted(abs(r) for r in rel)
    total = sum(a for _, a in pairs)
    return {
        "mape": statistics.fmean(ab),
        "median": statistics.median(ab),
        "p90": ab[min(len(ab) - 1, int(0.9 * len(ab)))],
        "bias": statistics.fmean(rel),
        "sum": (sum(e for e, _ in pairs) - total) / total * 100,
    }


def row(label: str, e: dict[str, float]) -> str:
    return (f"  {label:<34} MAPE {e['mape']:5.1f}%  median {e['median']:5.1f}%  "
            f"p90 {e['p90']:5.1f}%  bias {e['bias']:+6.1f}%  sum {e['sum']:+6.1f}%")


def text_errors(samples: Sequence[Sample], family: str, calib: Calibration | None) -> dict[str, float]:
    return errors([(count_text(s.text, family, calib), s.tokens) for s in samples])


def prompt_errors(
    samples: Sequence[Sample], family: str, calib: Calibration | None
) -> dict[str, float]:
    return errors([(count_messages(s.chat(), family, calib), s.prompt_tokens) for s in samples])


def scales(calib: Calibration) -> str:
    return f"scale prose {calib.scale:.3f} code {calib.code:.3f}"


def learn(samples: Sequence[Sample], step: Callable[[Calibration, Sample], Calibration]) -> Calibration:
    calib = Calibration()
    for s in samples:
        calib = step(calib, s)
    return calib


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="use only the first N texts (0: all)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the learn/held-out split")
    args = ap.parse_args(argv)

    texts = [json.loads(line)["text"] for line in REQUESTS.read_text().splitlines() if line]
    if args.limit:
        texts = texts[: args.limit]
    t0 = time.perf_counter()
    with llama_server() as base:
        model, samples = trio.run(measure, base, texts)
        random.Random(args.seed).shuffle(samples)
        half = len(samples) // 2
        learn_set, held = samples[:half], samples[half:]
        chats = conversations(held)
        chat_tokens = trio.run(measure_chats, base, chats)
        learn_chats = conversations(learn_set)
        learn_chat_tokens = trio.run(measure_chats, base, learn_chats)
    elapsed = time.perf_counter() - t0
    family = token_family(model)

    by_usage = learn(learn_set, lambda c, s: observe_prompt(c, s.chat(), family, s.prompt_tokens,
                                                             window=CTX))
    by_tokenize = learn(learn_set, lambda c, s: observe_text(c, s.text, family, s.tokens))
    by_exact = learn(learn_set, lambda c, s: observe_text(c, s.chat_text(), family,
                                                          s.chat_text_tokens))
    by_chats = Calibration()
    for msgs, n in zip(learn_chats, learn_chat_tokens, strict=True):
        by_chats = observe_prompt(by_chats, msgs, family, n, window=CTX)

    print(f"model {model} (token family {family!r}) on llama-server; {len(samples)} coding "
          f"requests, {len(learn_set)} to learn from, {len(held)} held out; measured in "
          f"{elapsed:.1f} s")
    print(f"calibration from usage.prompt_tokens: {scales(by_usage)} "
          f"({by_usage.samples} observations, {by_usage.rejected} ignored)")
    print(f"calibration from /tokenize:          {scales(by_tokenize)} "
          f"({by_tokenize.samples} observations, {by_tokenize.rejected} ignored)")
    print(f"calibration from /tokenize, prompts:  {scales(by_exact)} "
          f"({by_exact.samples} observations, {by_exact.rejected} ignored)")
    print(f"calibration from conversations:      {scales(by_chats)} "
          f"({by_chats.samples} observations of {len(learn_chats)} learning-half chats)")
    long_held = [s for s in held if s.tokens >= LONG]
    for title, subset in (("", held), (f", the {len(long_held)} of {LONG}+ tokens", long_held)):
        print(f"\nper request text, against /tokenize (held out{title}):")
        print(row("before calibration", text_errors(subset, family, None)))
        print(row("after (from usage.prompt_tokens)", text_errors(subset, family, by_usage)))
        print(row("after (from /tokenize)", text_errors(subset, family, by_tokenize)))
        print(row("after (/tokenize of prompts)", text_errors(subset, family, by_exact)))
    print("\nper prompt (system prompt + request), against usage.prompt_tokens (held out):")
    before, after = prompt_errors(held, family, None), prompt_errors(held, family, by_usage)
    print(row("before calibration", before))
    print(row("after (from usage.prompt_tokens)", after))
    print(row("after (from /tokenize)", prompt_errors(held, family, by_tokenize)))
    print(row("after (/tokenize of prompts)", prompt_errors(held, family, by_exact)))
    record("prompt estimate MAPE, before calibration", before["mape"], "%")
    record("prompt estimate MAPE, after calibration", after["mape"], "%")

    print(f"\nper conversation ({len(chats)} held-out chats of the system prompt and 6 messages), "
          "against usage.prompt_tokens:")
    for label, calib in (("before calibration", None), ("after (from usage.prompt_tokens)",
                                                        by_usage),
                         ("after (from /tokenize)", by_tokenize),
                         ("after (/tokenize of prompts)", by_exact),
                         ("after (from conversations)", by_chats)):
        pairs = [(count_messages(c, family, calib), n) for c, n in zip(chats, chat_tokens,
                                                                         strict=True)]
        found = errors(pairs)
        print(row(label, found))
        if calib is by_usage:
            record("conversation estimate MAPE, after calibration", found["mape"], "%")

    print("\nconvergence of the usage calibration (held-out prompt MAPE after n observations):")
    calib = Calibration()
    marks = {1, 2, 3, 5, 10, 20, 40, 80, len(learn_set)}
    for n, s in enumerate(learn_set, 1):
        calib = observe_prompt(calib, s.chat(), family, s.prompt_tokens, window=CTX)
        if n in marks:
            e = prompt_errors(held, family, calib)
            print(f"  n={n:<4} {scales(calib)}  MAPE {e['mape']:5.1f}%  "
                  f"bias {e['bias']:+6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
