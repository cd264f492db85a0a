"""The audit writer: queue policies, rotation under load, retention, key file, tampering."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from routerd.core.audit import AuditEvent, AuditOptions, ChainVerifier, derive_keys
from routerd.shell.audit import AuditLog, AuditSettings
from routerd.shell.audit_files import AuditFileWriter, iter_lines, load_or_create_key, log_files

SECRET = b"s" * 32
KEYS = derive_keys(SECRET)
QUERY = "please explain the launch codes in module zebra-7731"


def settings(tmp: Path, **kw: Any) -> AuditSettings:
    base: dict[str, Any] = dict(
        path=tmp / "audit.log", key_path=tmp / "audit.key", queue_size=1000, queue_full="block",
        max_bytes=1 << 20, backups=10, options=AuditOptions(),
    )  # fmt: skip
    base.update(kw)
    return AuditSettings(**base)


Stop = Callable[[], Awaitable[None]]
Runner = Callable[[AuditLog], Awaitable[Stop]]


@pytest.fixture
def run_log(nursery: trio.Nursery) -> Runner:
    """Start ``log.run``; return an ``await stop()`` that cancels it and waits for its end."""

    async def start(log: AuditLog) -> Stop:
        scope = trio.CancelScope()
        done = trio.Event()

        async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await log.run(task_status=task_status)
            finally:
                done.set()

        await nursery.start(runner)

        async def stop() -> None:
            scope.cancel()
            with trio.fail_after(5):
                await done.wait()

        return stop

    return start


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    for p in log_files(path):
        out += [json.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
    return out


def verify_files(path: Path, keys: Any = KEYS) -> Any:
    v = ChainVerifier(keys)
    for p in log_files(path):
        with p.open("rb") as f:
            for lineno, line in iter_lines(f, os.fstat(f.fileno()).st_size):
                v.feed(p.name, lineno, line)
    return v.finish()


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()))


async def test_queries_are_never_written_in_plaintext(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path), KEYS)
    stop = await run_log(log)
    for i in range(5):
        await log.record(AuditEvent(event_type="query", query=f"{QUERY} {i}", response="answer!"))
    await log.flush()
    await stop()
    blob = all_bytes(tmp_path)
    assert b"zebra-7731" not in blob and b"answer!" not in blob
    # Yet whoever holds the key can tell the text was sent (find_text reads the files).
    digest, found = await AuditLog(settings(tmp_path), KEYS).find_text(f"{QUERY} 3")
    assert [m["seq"] for m in found] == [6] and digest.encode() in blob


async def test_plaintext_when_configured(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, options=AuditOptions(log_query_text=True)), KEYS)
    stop = await run_log(log)
    await log.record(AuditEvent(event_type="query", query=QUERY))
    await log.flush()
    await stop()
    assert b"zebra-7731" in (tmp_path / "audit.log").read_bytes()


async def test_find_text_needs_the_key(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path), KEYS)
    stop = await run_log(log)
    await log.record(AuditEvent(event_type="query", query=QUERY, session_id="s1", model="m"))
    digest, found = await log.find_text(QUERY)
    assert [(m["seq"], m["field"], m["session_id"]) for m in found] == [(3, "query", "s1")]
    assert (await log.find_text(QUERY + "!"))[1] == []
    await stop()
    # Another key gives another hash: without the key the text cannot be matched.
    other = AuditLog(settings(tmp_path), derive_keys(b"o" * 32))
    assert (await other.find_text(QUERY))[0] != digest


async def test_rotation_under_load_loses_nothing(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, max_bytes=8192, backups=10_000, queue_size=128), KEYS)
    stop = await run_log(log)
    producers, each = 8, 100

    async def produce(p: int) -> None:
        for i in range(each):
            await log.record(
                AuditEvent(event_type="query", query=f"q{p}-{i}", tokens_in=p * 1000 + i)
            )
            if i % 50 == 0:
                log.security("test", f"producer {p} at {i}")
            if i % 7 == 0:
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        for p in range(producers):
            n.start_soon(produce, p)
    await log.flush()
    assert log.writer.rotations > 10
    report, _ = await log.verify_chain()
    assert report.ok, report.problems[:3]
    await stop()
    recs = records(tmp_path / "audit.log")
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    got = sorted(r["tokens_in"] for r in recs if r["event_type"] == "query")
    assert got == sorted(p * 1000 + i for p in range(producers) for i in range(each))
    assert sum(r["event_type"] == "security:test" for r in recs) == producers * 2
    for p in log_files(tmp_path / "audit.log")[1:]:
        first = json.loads(p.read_bytes().splitlines()[0])
        assert first["event_type"] == "audit:file_start"
    assert verify_files(tmp_path / "audit.log").ok


async def test_retention_keeps_a_verifiable_tail(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, max_bytes=4096, backups=2), KEYS)
    stop = await run_log(log)
    for i in range(200):
        await log.record(AuditEvent(event_type="query", query=f"q{i}"))
    report, files = await log.verify_chain()
    await stop()
    assert files == ["audit.log.2", "audit.log.1", "audit.log"]
    assert report.ok and not report.anchored


async def test_drop_policy_counts_and_reports(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, queue_size=5, queue_full="drop"), KEYS)
    for i in range(20):
        await log.record(AuditEvent(event_type="query", query=f"q{i}"))
    log.security("still_kept", "security events skip the bound")
    assert log.dropped == 15
    stop = await run_log(log)
    await log.flush()
    await stop()
    recs = records(tmp_path / "audit.log")
    dropped = [r for r in recs if r["event_type"] == "security:audit_dropped"]
    assert len(dropped) == 1 and dropped[0]["details"]["count"] == 15
    assert sum(r["event_type"] == "query" for r in recs) == 5
    assert any(r["event_type"] == "security:still_kept" for r in recs)


async def test_block_policy_waits_for_room(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, queue_size=2), KEYS)
    for i in range(2):
        await log.record(AuditEvent(event_type="query", query=f"q{i}"))
    with trio.move_on_after(0.2) as blocked:
        await log.record(AuditEvent(event_type="query", query="q2"))
    assert blocked.cancelled_caught and log.dropped == 0
    stop = await run_log(log)
    with trio.fail_after(5):
        await log.record(AuditEvent(event_type="query", query="q3"))
    await log.flush()
    await stop()
    assert sum(r["event_type"] == "query" for r in records(tmp_path / "audit.log")) == 3


async def test_restart_continues_the_chain(tmp_path: Path, run_log: Runner) -> None:
    for round_ in range(3):
        log = AuditLog(settings(tmp_path), KEYS)
        stop = await run_log(log)
        await log.record(AuditEvent(event_type="query", query=f"r{round_}"))
        await log.flush()
        await stop()
    report = verify_files(tmp_path / "audit.log")
    assert report.ok and report.anchored
    kinds = [r["event_type"] for r in records(tmp_path / "audit.log")]
    assert kinds.count("audit:start") == 3 and kinds.count("audit:stop") == 3
    assert kinds.count("audit:file_start") == 1
    assert not verify_files(tmp_path / "audit.log", derive_keys(b"o" * 32)).ok


async def test_tampering_in_a_rotated_file_is_reported(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, max_bytes=4096, backups=100), KEYS)
    stop = await run_log(log)
    for i in range(60):
        await log.record(AuditEvent(event_type="query", query=f"q{i}", model="m"))
    await log.flush()
    old = tmp_path / "audit.log.2"
    lines = old.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"model":"m"', b'"model":"x"')
    del lines[5]
    old.write_bytes(b"".join(lines))
    report, _ = await log.verify_chain()
    await stop()
    assert not report.ok
    assert {p.file for p in report.problems} == {"audit.log.2"}
    assert any("mac mismatch" in p.problem for p in report.problems)
    assert any("missing" in p.problem for p in report.problems)


async def test_tail_spans_files(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path, max_bytes=4096, backups=100), KEYS)
    stop = await run_log(log)
    for i in range(40):
        await log.record(AuditEvent(event_type="query", query=f"q{i}", tokens_in=i))
    lines = await log.tail(30)
    await stop()
    seqs = [json.loads(line)["seq"] for line in lines]
    assert len(seqs) == 30 and seqs == list(range(seqs[0], seqs[0] + 30))
    assert len(log_files(tmp_path / "audit.log")) > 2


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key_path = tmp_path / "audit.key"
    first, notes = load_or_create_key(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600 and "generated" in notes[0]
    again, notes = load_or_create_key(key_path)
    assert again == first and notes == []
    os.chmod(key_path, 0o644)
    again, notes = load_or_create_key(key_path)
    assert again == first and "readable by others" in notes[0]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


class HeldWriter(AuditFileWriter):
    """The real writer, held back (a slow disk) or failing (a full one) on demand."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.go = threading.Event()
        self.go.set()
        self.failures = 0

    def write(self, events: Any, options: AuditOptions) -> list[bytes]:
        self.go.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return super().write(events, options)


def held_log(tmp: Path, **kw: Any) -> tuple[AuditLog, HeldWriter]:
    log = AuditLog(settings(tmp, **kw), KEYS)
    s = log.settings
    writer = HeldWriter(s.path, KEYS, max_bytes=s.max_bytes, backups=s.backups, pid=1)
    log._writer = writer
    return log, writer


async def test_requests_never_wait_for_the_disk(tmp_path: Path, run_log: Runner) -> None:
    log, writer = held_log(tmp_path, queue_size=100)
    stop = await run_log(log)
    writer.go.clear()  # the disk stalls
    with trio.fail_after(1):
        for i in range(50):  # within the bound: each returns at once
            await log.record(AuditEvent(event_type="query", query=f"q{i}"))
    with trio.move_on_after(0.3) as waited:
        await log.flush()
    assert waited.cancelled_caught  # nothing reached the disk meanwhile
    writer.go.set()
    with trio.fail_after(5):
        await log.flush()
    await stop()
    assert sum(r["event_type"] == "query" for r in records(tmp_path / "audit.log")) == 50


async def test_a_failing_disk_loses_nothing(tmp_path: Path, run_log: Runner) -> None:
    log, writer = held_log(tmp_path)
    stop = await run_log(log)
    await log.flush()
    writer.failures = 2
    for i in range(5):
        await log.record(AuditEvent(event_type="query", query=f"q{i}", tokens_in=i))
    with trio.fail_after(10):
        await log.flush()  # written once the disk works again (a retry a second)
    await stop()
    assert log.write_errors == 2
    recs = records(tmp_path / "audit.log")
    assert [r["tokens_in"] for r in recs if r["event_type"] == "query"] == list(range(5))
    assert verify_files(tmp_path / "audit.log").ok


async def test_records_reach_the_disk_soon_without_a_flush(tmp_path: Path, run_log: Runner) -> None:
    log = AuditLog(settings(tmp_path), KEYS)
    stop = await run_log(log)
    sub = log.subscribe()
    await log.record(AuditEvent(event_type="query", query="q"))
    with trio.fail_after(log.gather + 2):  # no flush: the writer's own pace
        async for line in sub.receive:
            if json.loads(line)["event_type"] == "query":
                break
    await stop()
