"""The audit trail's records, their line format, the HMAC chain and its verification.

A line is one JSON object (:class:`AuditRecord`, every field present, in declaration order)
with a final ``"mac"`` member::

    {"seq":7,"timestamp":"2026-01-02T03:04:05.678Z","event_type":"query",...,"mac":"9f…"}

Invariants:

* ``mac = HMAC-SHA-256(chain_key, prev_mac + "\\n" + body)`` where ``body`` is the exact bytes
  of the line without ``,"mac":"…"`` (closing brace kept) and ``prev_mac`` is the previous
  line's mac, or :data:`GENESIS` for seq 1. Verification works on the bytes as written: no
  re-encoding, so no canonical-JSON ambiguity.
* ``seq`` grows by exactly one per line across rotated files; every file the writer starts
  opens with an ``audit:file_start`` record whose ``details.prev_mac`` is the mac of the line
  before it, so a log whose oldest files were removed by retention still verifies from there.
* Texts (queries, responses) are written as ``HMAC-SHA-256(text_key, utf-8 text)``: whoever has
  the key can tell whether a given text was sent; nobody else can, even by guessing. The
  plaintext of a query is written only with ``security.log_query_text = true``.
* Both keys derive from the one secret in the key file (:func:`derive_keys`), so a leaked
  text-hash key alone cannot forge the chain.
* Pure: time is a parameter, the key is bytes given in; no file is read here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from routerd_client.protocol import AuditChainResult, ChainProblemInfo

__all__ = [
    "FILE_START",
    "GENESIS",
    "KEY_BYTES",
    "AuditEvent",
    "AuditKeys",
    "AuditOptions",
    "AuditRecord",
    "AuditSink",
    "ChainProblem",
    "ChainReport",
    "ChainVerifier",
    "NullAudit",
    "ParsedLine",
    "build_record",
    "chain_result",
    "derive_keys",
    "format_timestamp",
    "parse_key",
    "parse_line",
    "seal",
    "security_event",
    "text_hash",
]

#: The ``prev_mac`` of the first line ever written.
GENESIS: Final = "0" * 64
#: Bytes of secret in the key file (written as hex).
KEY_BYTES: Final = 32
#: ``event_type`` of the record that opens every file.
FILE_START: Final = "audit:file_start"

_MAC_TAIL = re.compile(rb',"mac":"([0-9a-f]{64})"\}\Z')


class AuditEvent(msgspec.Struct, kw_only=True):
    """What a feature reports: the writer adds seq, time, hashes and the mac.

    ``query`` and ``response`` are plaintext handed to the writer; they are hashed (and the
    query written as is only if configured). ``event_type`` is ``query`` for a routed request,
    ``security:<kind>`` for a security event, ``audit:<kind>`` for the log's own records.
    """

    event_type: str
    session_id: str | None = None
    model: str | None = None
    service: str | None = None
    query: str | None = None
    response: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    success: bool = True
    error: str | None = None
    uid: int | None = None
    pid: int | None = None
    agent: str | None = None
    fallback_level: int | None = None
    details: dict[str, Any] | None = None


class AuditRecord(msgspec.Struct, kw_only=True):
    """One line of the audit log (without its mac). Field order is the line's key order."""

    seq: int
    timestamp: str
    event_type: str
    session_id: str | None = None
    model: str | None = None
    service: str | None = None
    query_hash: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    success: bool = True
    error: str | None = None
    uid: int | None = None
    pid: int | None = None
    agent: str | None = None
    fallback_level: int | None = None
    query: str | None = None
    response_hash: str | None = None
    details: dict[str, Any] | None = None


class AuditOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What of a text is written (``security.log_queries`` and friends)."""

    log_queries: bool = True  # the query's keyed hash
    log_query_text: bool = False  # the query itself, in plaintext
    log_responses: bool = False  # the response's keyed hash


class AuditKeys(msgspec.Struct, frozen=True):
    chain: bytes
    text: bytes


class AuditSink(Protocol):
    """Where features send audit events (``app.audit``).

    ``record_nowait`` never blocks; ``record`` waits for queue space when the queue-full policy
    is ``block``. Security events are never dropped, whatever the policy.
    """

    def record_nowait(self, event: AuditEvent) -> None: ...

    async def record(self, event: AuditEvent) -> None: ...

    def security(self, kind: str, reason: str, **details: Any) -> None: ...


class NullAudit:
    """The sink in place until the security feature installs the real one: drops events."""

    def record_nowait(self, event: AuditEvent) -> None:
        return None

    async def record(self, event: AuditEvent) -> None:
        return None

    def security(self, kind: str, reason: str, **details: Any) -> None:
        return None


def security_event(kind: str, reason: str, details: Mapping[str, Any]) -> AuditEvent:
    """The event for a security incident of ``kind`` (``refused_peer``, ``refused_endpoint``...).

    ``uid``/``pid``/``agent`` in ``details`` become the record's own fields.
    """
    extra = {k: v for k, v in details.items() if k not in ("uid", "pid", "agent") and v is not None}
    extra["reason"] = reason
    uid, pid, agent = details.get("uid"), details.get("pid"), details.get("agent")
    return AuditEvent(
        event_type=f"security:{kind}",
        success=False,
        error=reason,
        uid=uid if isinstance(uid, int) else None,
        pid=pid if isinstance(pid, int) else None,
        agent=agent if isinstance(agent, str) else None,
        details=extra,
    )


def parse_key(text: str | bytes) -> bytes:
    """The secret in a key file's contents (hex); raises ValueError if it is not one."""
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        raise ValueError("the audit key file does not hold a hex key") from None
    if len(key) < 16:
        raise ValueError("the audit key is too short (at least 16 bytes expected)")
    return key


def derive_keys(secret: bytes) -> AuditKeys:
    """Separate keys for the chain and for text hashes, both from the one secret."""
    return AuditKeys(
        chain=hmac.new(secret, b"routerd audit chain v1", hashlib.sha256).digest(),
        text=hmac.new(secret, b"routerd audit text v1", hashlib.sha256).digest(),
    )


def text_hash(keys: AuditKeys, text: str) -> str:
    """The keyed hash a query or response is logged as (64 hex digits)."""
    return hmac.new(keys.text, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def format_timestamp(now: float) -> str:
    """``now`` (epoch seconds) as ISO 8601 UTC with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def build_record(
    event: AuditEvent, *, seq: int, now: float, keys: AuditKeys, options: AuditOptions
) -> AuditRecord:
    """The record for ``event``: texts hashed (or dropped) as ``options`` say."""
    query_hash = None
    if event.query is not None and options.log_queries:
        query_hash = text_hash(keys, event.query)
    response_hash = None
    if event.response is not None and options.log_responses:
        response_hash = text_hash(keys, event.response)
    return AuditRecord(
        seq=seq,
        timestamp=format_timestamp(now),
        event_type=event.event_type,
        session_id=event.session_id,
        model=event.model,
        service=event.service,
        query_hash=query_hash,
        tokens_in=event.tokens_in,
        tokens_out=event.tokens_out,
        success=event.success,
        error=event.error,
        uid=event.uid,
        pid=event.pid,
        agent=event.agent,
        fallback_level=event.fallback_level,
        query=event.query if options.log_query_text else None,
        response_hash=response_hash,
        details=event.details,
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditRecord)


def _mac(keys: AuditKeys, prev_mac: str, body: bytes) -> str:
    return hmac.new(keys.chain, prev_mac.encode("ascii") + b"\n" + body, hashlib.sha256).hexdigest()


def seal(record: AuditRecord, prev_mac: str, keys: AuditKeys) -> tuple[bytes, str]:
    """``(line, mac)``: the line to append (newline included) and its mac for the next one."""
    body = _encoder.encode(record)
    mac = _mac(keys, prev_mac, body)
    return body[:-1] + b',"mac":"' + mac.encode("ascii") + b'"}\n', mac


class ParsedLine(msgspec.Struct, frozen=True):
    record: AuditRecord
    body: bytes
    mac: str


def parse_line(line: bytes) -> ParsedLine:
    """Split a written line into its record, the signed body and the mac.

    Raises ValueError for a line that is not an audit line (no trailing mac, bad JSON).
    """
    line = line.rstrip(b"\r\n")
    m = _MAC_TAIL.search(line)
    if m is None:
        raise ValueError("no mac at the end of the line")
    body = line[: m.start()] + b"}"
    try:
        record = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not an audit record: {exc}") from None
    return ParsedLine(record, body, m.group(1).decode("ascii"))


class ChainProblem(msgspec.Struct, frozen=True):
    file: str
    line: int  # 1-based line number in ``file``
    seq: int | None
    problem: str


class ChainReport(msgspec.Struct):
    """The outcome of a verification. ``ok``: every line verified and nothing is missing."""

    ok: bool
    lines: int
    first_seq: int | None
    last_seq: int | None
    last_mac: str | None
    anchored: bool  # the chain starts at seq 1 (not at a file left by retention)
    problems: list[ChainProblem]


def chain_result(report: ChainReport, files: list[str]) -> AuditChainResult:
    """``report`` on the wire (``audit.verify_chain``), with the files it covered."""
    return AuditChainResult(
        ok=report.ok,
        lines=report.lines,
        first_seq=report.first_seq,
        last_seq=report.last_seq,
        anchored=report.anchored,
        files=files,
        problems=[ChainProblemInfo(p.file, p.line, p.seq, p.problem) for p in report.problems],
    )


class ChainVerifier:
    """Push-style verification: :meth:`feed` each line in order, then :meth:`finish`.

    Files are fed oldest first. After a broken link the chain resynchronises on the next line
    (its stated mac is taken as the new link), so one deleted or edited line is one problem,
    not a cascade.
    """

    #: Problems kept in the report; more are counted only.
    MAX_PROBLEMS = 100

    def __init__(self, keys: AuditKeys) -> None:
        self._keys = keys
        self._prev: str | None = None
        self._last_seq: int | None = None
        self._first_seq: int | None = None
        self._lines = 0
        self._good = 0
        self._anchored = False
        self._problems: list[ChainProblem] = []
        self._more = 0

    def _problem(self, file: str, lineno: int, seq: int | None, text: str) -> None:
        if len(self._problems) < self.MAX_PROBLEMS:
            self._problems.append(ChainProblem(file, lineno, seq, text))
        else:
            self._more += 1

    def feed(self, file: str, lineno: int, line: bytes) -> None:
        if not line.strip():
            return
        self._lines += 1
        try:
            parsed = parse_line(line)
        except ValueError as exc:
            self._problem(file, lineno, None, f"unreadable line: {exc}")
            self._prev = None
            return
        rec = parsed.record
        prev = self._prev
        if self._first_seq is None:
            self._first_seq = rec.seq
        if prev is None:
            prev = self._start_link(file, lineno, rec)
        elif self._last_seq is not None and rec.seq != self._last_seq + 1:
            gap = rec.seq - self._last_seq - 1
            what = f"{gap} line(s) missing" if gap > 0 else "out of order or repeated"
            self._problem(
                file, lineno, rec.seq, f"seq jumps from {self._last_seq} to {rec.seq}: {what}"
            )
        if prev is not None:
            if hmac.compare_digest(_mac(self._keys, prev, parsed.body), parsed.mac):
                self._good += 1
            elif self._last_seq is None or rec.seq == self._last_seq + 1:
                self._problem(
                    file, lineno, rec.seq,
                    "mac mismatch: this line was edited, or the key is not the one it was "
                    "written with",
                )  # fmt: skip
        self._prev = parsed.mac
        self._last_seq = rec.seq

    def _start_link(self, file: str, lineno: int, rec: AuditRecord) -> str | None:
        """The mac before the chain's first line (or after an unreadable one), if known."""
        first = self._lines == 1
        if rec.seq == 1:
            self._anchored = self._anchored or first
            return GENESIS
        if rec.event_type == FILE_START and rec.details is not None:
            prev = rec.details.get("prev_mac")
            if isinstance(prev, str):
                return prev
        where = "the log begins" if first else "after an unreadable line, the chain resumes"
        self._problem(
            file, lineno, rec.seq,
            f"{where} at seq {rec.seq} without a file header: earlier lines were removed",
        )  # fmt: skip
        return None

    def finish(
        self, *, expected_last_seq: int | None = None, expected_last_mac: str | None = None
    ) -> ChainReport:
        """The report. ``expected_*`` (the writer's own idea of the end) detect a cut tail."""
        if expected_last_seq is not None and self._last_seq != expected_last_seq:
            self._problem(
                "", 0, self._last_seq,
                f"the log ends at seq {self._last_seq} but the daemon wrote up to seq "
                f"{expected_last_seq}: lines were removed from the end",
            )  # fmt: skip
        elif expected_last_mac is not None and self._prev != expected_last_mac:
            self._problem("", 0, self._last_seq, "the last line is not the one the daemon wrote")
        if self._lines and not self._good:
            self._problem("", 0, None, "no line verifies: is this the right key?")
        problems = list(self._problems)
        if self._more:
            problems.append(ChainProblem("", 0, None, f"... and {self._more} more problems"))
        return ChainReport(
            ok=not problems,
            lines=self._lines,
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            last_mac=self._prev,
            anchored=self._anchored,
            problems=problems,
        )
