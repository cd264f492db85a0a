"""kill -9 at any moment loses no acknowledged turn.

A child process (``sessions_crash_child.py``) commits turns in several conversations at once
and prints each turn once ``commit_turn`` has returned; the test SIGKILLs it at a random moment,
several times over the same database, then checks that every printed turn is stored, whole,
and that nothing half-written is.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import trio

from routerd.core.sessions import SessionState
from routerd.shell.sessions_db import DB_NAME, SessionStore

CHILD = Path(__file__).with_name("sessions_crash_child.py")
ROUNDS = 4
WRITERS = 3


def run_and_kill(state_dir: Path, rng: random.Random) -> list[tuple[str, int]]:
    """One child run, killed after a random number of acknowledged turns; what it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(state_dir), str(WRITERS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        acked: list[tuple[str, int]] = []
        target = rng.randrange(5, 120)
        while len(acked) < target:
            line = proc.stdout.readline()
            assert line, f"the child died: {proc.stderr.read() if proc.stderr else ''}"
            sid, turn = line.split()
            acked.append((sid, int(turn)))
        time.sleep(rng.random() * 0.01)  # land anywhere, a transaction half-done included
        proc.send_signal(signal.SIGKILL)
        # Whatever it printed before dying was acknowledged too.
        for line in proc.stdout:
            sid, turn = line.split()
            acked.append((sid, int(turn)))
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return acked


def load(state_dir: Path) -> dict[str, SessionState]:
    async def read() -> dict[str, SessionState]:
        store = SessionStore(state_dir)
        try:
            loaded = await store.start()
            assert loaded.skipped == 0 and loaded.quarantined is None
            return {s.id: s for s in loaded.sessions}
        finally:
            await store.stop()

    return trio.run(read)


def check_whole(state: SessionState) -> None:
    """Turns 1..n, each with its request and answer, in order, nothing else."""
    n = len(state.turns)
    assert [t.turn for t in state.turns] == list(range(1, n + 1))
    assert len(state.messages) == 2 * n
    for i in range(n):
        q, a = state.messages[2 * i], state.messages[2 * i + 1]
        assert re.match(rf"{state.id} q{i} x*\Z", q.content), q.content[:80]
        assert a.content == f"{state.id} a{i}"
        assert state.turns[i].partial == (i % 7 == 3)
        assert (a.metadata.get("partial") is True) == (i % 7 == 3)
    assert state.version == n


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acked: dict[str, set[int]] = defaultdict(set)
    for _ in range(ROUNDS):
        for sid, turn in run_and_kill(tmp_path, rng):
            acked[sid].add(turn)
        stored = load(tmp_path)
        for sid, turns in acked.items():
            assert sid in stored, f"session {sid} with acknowledged turns is gone"
            state = stored[sid]
            check_whole(state)
            # Every acknowledged turn is there; at most one more (committed, not yet printed).
            assert len(state.turns) in (max(turns) + 1, max(turns) + 2)
        for sid in stored.keys() - acked.keys():
            check_whole(stored[sid])  # a session whose first turn was never acknowledged
            assert len(stored[sid].turns) == 1
    assert sum(len(t) for t in acked.values()) >= ROUNDS * 5
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
