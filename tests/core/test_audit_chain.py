"""The audit line format, the HMAC chain and its verification (pure)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.audit import (
    FILE_START,
    GENESIS,
    AuditEvent,
    AuditKeys,
    AuditOptions,
    ChainReport,
    ChainVerifier,
    build_record,
    derive_keys,
    parse_key,
    parse_line,
    seal,
    security_event,
    text_hash,
)

KEYS = derive_keys(b"k" * 32)
OTHER = derive_keys(b"x" * 32)
QUERY = "refactor the payroll module in /srv/secret-project"


def chain(n: int, keys: AuditKeys = KEYS, *, start: int = 1, prev: str = GENESIS) -> list[bytes]:
    lines = []
    for i in range(start, start + n):
        event = AuditEvent(event_type="query", query=f"{QUERY} #{i}", model="m", tokens_in=i)
        if i == start and start != 1:
            event = AuditEvent(event_type=FILE_START, details={"prev_mac": prev})
        rec = build_record(event, seq=i, now=1_700_000_000 + i, keys=keys, options=AuditOptions())
        line, prev = seal(rec, prev, keys)
        lines.append(line)
    return lines


def verify(lines: list[bytes], keys: AuditKeys = KEYS, **expected: object) -> ChainReport:
    v = ChainVerifier(keys)
    for i, line in enumerate(lines, 1):
        v.feed("audit.log", i, line)
    return v.finish(**expected)  # type: ignore[arg-type]


def test_line_is_json_with_the_seed_fields_and_a_mac() -> None:
    (line,) = chain(1)
    doc = json.loads(line)
    for field in (
        "timestamp", "event_type", "session_id", "model", "service", "query_hash",
        "tokens_in", "tokens_out", "success", "error", "uid", "pid", "agent", "fallback_level",
    ):  # fmt: skip
        assert field in doc
    assert doc["timestamp"] == "2023-11-14T22:13:21.000Z"
    assert len(doc["mac"]) == 64 and line.endswith(b'"}\n')
    assert parse_line(line).record.seq == 1


def test_no_plaintext_unless_configured() -> None:
    event = AuditEvent(event_type="query", query=QUERY, response="the answer")
    rec = build_record(event, seq=1, now=0, keys=KEYS, options=AuditOptions())
    line, _ = seal(rec, GENESIS, KEYS)
    assert QUERY.encode() not in line and b"the answer" not in line
    assert rec.query_hash == text_hash(KEYS, QUERY)
    assert rec.response_hash is None
    opts = AuditOptions(log_query_text=True, log_responses=True)
    rec = build_record(event, seq=1, now=0, keys=KEYS, options=opts)
    assert rec.query == QUERY and rec.response_hash == text_hash(KEYS, "the answer")
    rec = build_record(event, seq=1, now=0, keys=KEYS, options=AuditOptions(log_queries=False))
    assert rec.query_hash is None


def test_text_hash_needs_the_key() -> None:
    assert text_hash(KEYS, QUERY) != text_hash(OTHER, QUERY)
    assert text_hash(KEYS, QUERY) != text_hash(KEYS, QUERY + " ")
    # The chain key and the text key differ: knowing one does not give the other.
    assert KEYS.chain != KEYS.text


def test_intact_chain_verifies() -> None:
    report = verify(chain(20), expected_last_seq=20)
    assert report.ok and report.anchored and report.lines == 20
    assert (report.first_seq, report.last_seq) == (1, 20)


def test_wrong_key_fails_everywhere() -> None:
    report = verify(chain(5), OTHER)
    assert not report.ok
    assert any("right key" in p.problem for p in report.problems)


def test_edited_line_is_found() -> None:
    lines = chain(10)
    lines[4] = lines[4].replace(b'"tokens_in":5', b'"tokens_in":6')
    report = verify(lines)
    assert not report.ok
    assert [(p.seq, "mac mismatch" in p.problem) for p in report.problems] == [(5, True)]


def test_deleted_line_is_found_once() -> None:
    lines = chain(10)
    del lines[6]
    report = verify(lines)
    assert [p.seq for p in report.problems] == [8]
    assert "1 line(s) missing" in report.problems[0].problem


def test_cut_start_is_found_but_a_rotation_header_anchors() -> None:
    lines = chain(10)
    report = verify(lines[3:])
    assert not report.ok and "earlier lines were removed" in report.problems[0].problem
    prev = parse_line(lines[9]).mac
    rotated = chain(5, start=11, prev=prev)
    report = verify(rotated, expected_last_seq=15)
    assert report.ok and not report.anchored and report.first_seq == 11


def test_cut_tail_is_found_against_the_writer() -> None:
    report = verify(chain(10)[:8], expected_last_seq=10)
    assert not report.ok and "removed from the end" in report.problems[-1].problem


def test_garbage_line() -> None:
    lines = chain(4)
    lines.insert(2, b"not json\n")
    report = verify(lines)
    assert any("unreadable" in p.problem for p in report.problems)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 11), st.sampled_from(["delete", "edit", "swap"]))
def test_any_single_tampering_is_detected(i: int, how: str) -> None:
    lines = chain(12)
    if how == "delete":
        del lines[i]
    elif how == "edit":
        lines[i] = lines[i].replace(b'"model":"m"', b'"model":"n"')
    else:
        j = (i + 1) % 12
        lines[i], lines[j] = lines[j], lines[i]
    assert not verify(lines, expected_last_seq=12).ok


def test_security_event_fields() -> None:
    ev = security_event("refused_peer", "uid 65534 may not", {"uid": 65534, "pid": 9, "gid": 1})
    assert ev.event_type == "security:refused_peer"
    assert (ev.uid, ev.pid, ev.success) == (65534, 9, False)
    assert ev.details == {"gid": 1, "reason": "uid 65534 may not"}


def test_parse_key() -> None:
    assert parse_key(("ab" * 32) + "\n") == bytes.fromhex("ab" * 32)
    for bad in ("zz", "abcd"):
        try:
            parse_key(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
