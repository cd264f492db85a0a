"""kill -9 of the real daemon in the middle of a stream of ``route`` requests loses no
acknowledged turn, and the restarted daemon continues the sessions.

``python -m routerd`` runs as a subprocess in front of a fake llama.cpp server (in this test's
trio loop, answering slowly enough that requests are in flight). Three blocking clients, one
thread each, send turns on their own session (``"new"``, then the id ``end`` returned) and
record every turn whose ``end`` arrived: with a session, ``end`` is sent only once the turn is
stored. The daemon is SIGKILLed at a random moment (seeded: the seed is in every failure
message) while a generation runs, restarted on the same state directory, and every session is
exported: each acknowledged request is there once, in order, followed by the whole answer; a
turn that was in flight is there whole, or flagged partial, or absent, never anything else.
Then one more turn on an old session must succeed and be stored. Three rounds, same state.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes import FakeModel, FakeServer, Script, start_fake

from routerd.shell.sessions_db import DB_NAME
from routerd_client import Client, DaemonUnreachable, RouterdError

ROUNDS = 3
CLIENTS = 3
START_TIMEOUT = 60.0  # spawn to "the model server is online" on a loaded 2-core machine
CALL_TIMEOUT = 60.0  # each wait for a reply or the next event
CHUNKS = ("The ", "stored ", "answer: ", "rename ", "x ", "to ", "total", ".")
ANSWER = "".join(CHUNKS)
OFF = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "koboldcpp", "gpt4all",
       "textgen")  # fmt: skip
CATEGORIES = ("coding", "reasoning", "analysis", "documentation")


def config_text(root: str, endpoint: str) -> str:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in OFF)
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 1024" for c in CATEGORIES)
    return f"""
[daemon]
state_dir = "{root}/state"
{off}
[services.llamacpp]
endpoint = "{endpoint}"
{routes}
[serena]
enabled = false
[discovery]
interval = 1.0
[routing]
reserve_for_answer = 256
[routing.timeouts]
first_token = {CALL_TIMEOUT}
idle = {CALL_TIMEOUT}
overall = {CALL_TIMEOUT}
"""


# --- the daemon process -----------------------------------------------------------------------


class Daemon:
    """``python -m routerd`` on ``root``'s socket, config and state; one process at a time."""

    def __init__(self, root: str, endpoint: str) -> None:
        self.root = root
        self.socket = f"{root}/d.sock"
        self.config = f"{root}/routerd.toml"
        Path(self.config).write_text(config_text(root, endpoint), encoding="utf-8")
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("ROUTERD_", "NOTIFY_SOCKET", "LISTEN_", "JOURNAL_STREAM"))
        }  # fmt: skip
        self.env.update(XDG_RUNTIME_DIR=f"{root}/run", XDG_CONFIG_HOME=f"{root}/xdg",
                        XDG_STATE_HOME=f"{root}/xdg-state")  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def log_tail(self) -> str:
        text = Path(f"{self.root}/daemon{self.starts}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-40:])

    def start(self) -> None:
        """Spawn the daemon and return once it lists the fake's model as online."""
        self.starts += 1
        with open(f"{self.root}/daemon{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "routerd", "--config", self.config, "--socket", self.socket],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._online():
                return
            time.sleep(0.05)
        pytest.fail(f"the daemon's model server was not online in time:\n{self.log_tail()}")

    def _online(self) -> bool:
        try:
            with Client(self.socket, timeout=5.0) as client:
                services = client.call("services.list")["services"]
        except (DaemonUnreachable, RouterdError, OSError):
            return False
        return any(s["state"] == "online" and s.get("models") for s in services)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if that does not end it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the clients ------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients sent and what was acknowledged, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    session_of: dict[int, str] = field(default_factory=dict)  # client -> its session id
    owner: dict[str, int] = field(default_factory=dict)  # session id -> client
    sent: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))  # by client
    acked: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # by session
    acked_this_round: int = 0
    killed: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)

    def ack(self, client: int, sid: str, text: str) -> None:
        with self.lock:
            assert self.owner.setdefault(sid, client) == client, f"{sid} changed hands"
            self.session_of[client] = sid
            self.acked[sid].append(text)
            self.acked_this_round += 1


def route(client: Client, text: str, session_id: str) -> dict[str, Any]:
    """One ``route`` turn; its ``end`` data once the whole answer streamed."""
    stream = client.stream("route", {"query": text, "session_id": session_id, "category": "coding"})
    chunks = [e.data["text"] for e in stream if e.event == "chunk"]
    end: dict[str, Any] = stream.end_data
    assert end is not None, "the stream ended without an end event"
    assert end["finish_reason"] == "stop" and "".join(chunks) == ANSWER, (end, chunks)
    assert end["session_id"], end
    if session_id != "new":
        assert end["session_id"] == session_id, end
    return end


def client_loop(socket: str, k: int, rnd: int, ledger: Ledger) -> None:
    """Send turns on client ``k``'s session until the daemon dies under it."""
    n = 0
    try:
        with Client(socket, timeout=CALL_TIMEOUT) as client:
            while True:
                sid = ledger.session_of.get(k, "new")
                text = f"round {rnd} client {k} turn {n}: rename variable x{n} in utils.py"
                ledger.sent[k].add(text)
                end = route(client, text, sid)
                ledger.ack(k, end["session_id"], text)
                n += 1
    except RouterdError as exc:  # ConnectionLost and the like: expected once killed
        if not ledger.killed.is_set():
            ledger.failures.append(f"client {k} failed before the kill: {exc!r}")
    except BaseException as exc:  # an assertion in route(): report it from the main thread
        ledger.failures.append(f"client {k}: {exc!r}")


@dataclass
class Clients:
    threads: list[threading.Thread]

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=CALL_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"


def start_clients(socket: str, rnd: int, ledger: Ledger) -> Clients:
    threads = [
        threading.Thread(target=client_loop, args=(socket, k, rnd, ledger), daemon=True)
        for k in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    return Clients(threads)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = CALL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# --- the checks -------------------------------------------------------------------------------


def check_session(export: dict[str, Any], acked: list[str], sent: set[str]) -> None:
    """Every message pair is a request this client sent and the answer (whole, or flagged
    partial and a prefix of it); every acknowledged request is there once, in order, with the
    whole answer."""
    messages = export["messages"]
    assert len(export["turns"]) == export["session"]["turns"]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    assert len(users) == len(export["turns"]), "one request per stored turn"
    for i, m in enumerate(messages):
        if m["role"] == "user":
            assert m["content"] in sent, f"a request nobody sent: {m['content']!r}"
        else:
            assert m["role"] == "assistant" and messages[i - 1]["role"] == "user", messages
            partial = m.get("metadata", {}).get("partial") is True
            assert m["content"] == ANSWER or (partial and ANSWER.startswith(m["content"])), m
    contents = [messages[i]["content"] for i in users]
    positions = []
    for text in acked:
        assert contents.count(text) == 1, f"acknowledged {text!r} is stored {contents.count(text)}x"
        i = users[contents.index(text)]
        answer = messages[i + 1] if i + 1 < len(messages) else None
        assert answer is not None and answer["role"] == "assistant", f"no answer to {text!r}"
        assert answer["content"] == ANSWER and not answer.get("metadata", {}).get("partial"), answer
        positions.append(i)
    assert positions == sorted(positions), "acknowledged turns out of order"


def check_all(socket: str, ledger: Ledger, context: str) -> dict[str, dict[str, Any]]:
    """Export every session the daemon lists and check it; return the exports by id."""
    with Client(socket, timeout=CALL_TIMEOUT) as client:
        listed = {s["id"] for s in client.call("sessions.list")["sessions"]}
        missing = set(ledger.acked) - listed
        assert not missing, f"{context}: sessions with acknowledged turns are gone: {missing}"
        exports = {sid: client.call("sessions.export", {"id": sid}) for sid in listed}
    every_sent = set().union(*ledger.sent.values())
    for sid, export in exports.items():
        owner = ledger.owner.get(sid)
        # A session never acknowledged was born from an in-flight "new": any client's text.
        sent = ledger.sent[owner] if owner is not None else every_sent
        try:
            check_session(export, ledger.acked.get(sid, []), sent)
        except AssertionError as exc:
            raise AssertionError(f"{context}, session {sid}: {exc}") from None
        if owner is None:
            assert export["session"]["turns"] == 1, f"{context}: {sid} grew unacknowledged"
    return exports


def continue_one(socket: str, ledger: Ledger, rng: random.Random, rnd: int) -> None:
    """One more turn on an old session after the restart: answered, stored, whole."""
    sid = rng.choice(sorted(ledger.acked))
    with Client(socket, timeout=CALL_TIMEOUT) as client:
        before = client.call("sessions.export", {"id": sid})
        text = f"after restart {rnd}: now add a docstring"
        ledger.sent[ledger.owner[sid]].add(text)
        route(client, text, sid)
        after = client.call("sessions.export", {"id": sid})
    ledger.acked[sid].append(text)
    assert after["session"]["turns"] == before["session"]["turns"] + 1
    assert [m["content"] for m in after["messages"][-2:]] == [text, ANSWER]
    assert after["messages"][: len(before["messages"])] == before["messages"]


def wait_for_traffic(fake: FakeServer, ledger: Ledger, target: int) -> None:
    """Return once ``target`` turns were acknowledged this round and a generation streams.

    The caller then kills after a random pause: inside that stream (the answer takes
    ``len(CHUNKS) * chunk_delay``), or in the commit and ``end`` just after it, or in the next.
    """
    wait_for(lambda: bool(ledger.failures) or ledger.acked_this_round >= target,
             f"{target} acknowledged turns")  # fmt: skip
    assert not ledger.failures, ledger.failures
    wait_for(lambda: fake.active > 0, "a generation in flight")


def run_rounds(daemon: Daemon, fake: FakeServer, rng: random.Random) -> None:
    ledger = Ledger()
    for rnd in range(ROUNDS):
        daemon.start()
        if rnd:
            check_all(daemon.socket, ledger, f"after restart {rnd}")
            continue_one(daemon.socket, ledger, rng, rnd)
        ledger.acked_this_round = 0
        ledger.killed.clear()
        clients = start_clients(daemon.socket, rnd, ledger)
        try:
            wait_for_traffic(fake, ledger, rng.randint(2, 12))
            time.sleep(rng.uniform(0.0, 0.12))  # where the kill lands: see wait_for_traffic
        finally:
            ledger.killed.set()
            daemon.kill()
            clients.join()
        assert not ledger.failures, ledger.failures
    daemon.start()
    check_all(daemon.socket, ledger, "after the last restart")
    continue_one(daemon.socket, ledger, rng, ROUNDS)
    daemon.stop()
    # At least 2 acknowledged turns a round, and one more after each restart.
    assert sum(len(v) for v in ledger.acked.values()) >= ROUNDS * 2 + ROUNDS
    conn = sqlite3.connect(Path(daemon.root) / "state" / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_sigkill_of_the_daemon_loses_no_acknowledged_turn(
    nursery: trio.Nursery, short_tmp: str
) -> None:
    seed = int(os.environ.get("ROUTERD_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    model = FakeModel("qwen2.5-coder-7b-instruct", context_length=32768, family="qwen2")
    script = Script(chunks=CHUNKS, chunk_delay=0.015)
    fake = await start_fake(nursery, "llamacpp", models=[model], script=script)
    daemon = Daemon(short_tmp, fake.base_url)
    try:
        await trio.to_thread.run_sync(run_rounds, daemon, fake, random.Random(seed))
    except BaseException as exc:
        exc.add_note(f"seed {seed} (rerun with ROUTERD_TEST_SEED={seed}); log:\n"
                     + (daemon.log_tail() if daemon.starts else ""))  # fmt: skip
        raise
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
