"""Run by test_sessions_durability.py as a subprocess; not a test module.

``python sessions_crash_child.py STATE_DIR WRITERS``: opens the session database in STATE_DIR,
prints ``ready``, then runs WRITERS concurrent conversations that commit turns until killed.
After each ``commit_turn`` returns (the turn is acknowledged) it prints ``SESSION_ID TURN``.
Every fifth turn switches model, so stored messages are rewritten (delete + insert), and every
seventh is partial.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import trio

from routerd.core.config import SessionsConfig
from routerd.core.context import Message
from routerd.shell.sessions import SessionManager

UID = 4242


def line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def converse(mgr: SessionManager, seed: int) -> None:
    rng = random.Random(seed)
    session = mgr.open(None, uid=UID, agent="crash-test")
    i = 0
    while True:
        model = ("qwen2.5-coder:7b", "llama3.1:8b")[(i // 5) % 2]
        await mgr.commit_turn(
            session,
            request_messages=[Message("user", f"{session.id} q{i} " + "x" * rng.randrange(5000))],
            answer=Message("assistant", f"{session.id} a{i}"),
            model=model,
            service="ollama",
            usage=None,
            partial=i % 7 == 3,
        )
        line(f"{session.id} {i}")
        i += 1


async def main(state_dir: str, writers: int) -> None:
    mgr = SessionManager(Path(state_dir), SessionsConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        line("ready")
        for k in range(writers):
            nursery.start_soon(converse, mgr, k)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
