"""routerd.core.sessions: ids, ownership, planned turns, expiry, eviction and exports."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.compaction import CompactionPolicy, compact
from routerd.core.config import ConfigError, parse_config
from routerd.core.context import Message, estimate_counter
from routerd.core.errors import BadRequest, Forbidden
from routerd.core.sessions import (
    LOW_WATER,
    Footprint,
    SessionState,
    TurnInput,
    check_continue,
    check_read,
    choose_evictions,
    compaction_record,
    detail_of,
    expired,
    export_of,
    info_of,
    needs_exact_count,
    new_session,
    parse_session_id,
    plan_turn,
    token_family,
)
from routerd_client.protocol_sessions import EXPORT_FORMAT, EXPORT_VERSION, SessionExport

SID = "0123456789abcdef0123456789abcdef"
COUNT = estimate_counter("default")


def fresh(owner: int = 1000, prompt: str = "You are a coding assistant.") -> SessionState:
    return new_session(SID, owner_uid=owner, agent="aider", system_prompt=prompt, now=100.0)


def turn(state: SessionState, text: str, *, model: str | None = "m1", now: float = 200.0,
         **kw: object) -> SessionState:
    t = TurnInput(request=(Message("user", text),), answer=Message("assistant", "ok " + text),
                  model=model, **kw)  # type: ignore[arg-type]
    return plan_turn(state, t, COUNT, now).state


# --- ids and ownership ------------------------------------------------------------------------


def test_session_ids_are_32_hex_digits_in_lowercase() -> None:
    assert parse_session_id(SID) == SID
    assert parse_session_id(SID.upper()) == SID


@pytest.mark.parametrize(
    "bad", ["", "abc", SID[:-1], SID + "0", "g" * 32, " " + SID[1:], SID[:31] + "\n", "-" * 32]
)
def test_malformed_session_ids_are_bad_requests(bad: str) -> None:
    with pytest.raises(BadRequest, match="32 hexadecimal digits"):
        parse_session_id(bad)


def test_only_the_owner_continues_a_session() -> None:
    s = fresh(owner=1000)
    check_continue(s, 1000)
    for other in (1001, 0, None):
        with pytest.raises(Forbidden, match="another user"):
            check_continue(s, other)


def test_owner_root_and_the_daemon_user_may_read() -> None:
    s = fresh(owner=1000)
    check_read(s, 1000, daemon_uid=999)
    check_read(s, 0, daemon_uid=999)
    check_read(s, 999, daemon_uid=999)
    for other in (1001, None):
        with pytest.raises(Forbidden):
            check_read(s, other, daemon_uid=999)


@pytest.mark.parametrize(
    ("model", "family"),
    [("qwen2.5-coder:7b", "qwen"), ("Qwen/Qwen2.5-Coder-7B", "qwen"), ("llama3.1:8b", "llama"),
     ("SmolLM2-135M-Instruct", "default"), (None, "default"), ("", "default")],
)
def test_token_family(model: str | None, family: str) -> None:
    assert token_family(model) == family


# --- turns ------------------------------------------------------------------------------------


def test_a_turn_appends_request_and_answer_counted() -> None:
    s0 = fresh()
    plan = plan_turn(
        s0,
        TurnInput(request=(Message("user", "hello"),), answer=Message("assistant", "hi"),
                  model="m1", service="ollama", prompt_tokens=40, completion_tokens=2),
        COUNT, 150.0,
    )  # fmt: skip
    s1 = plan.state
    assert not plan.rewrite  # the first model is no switch from "nothing stored"
    assert [m.content for m in plan.added] == ["hello", "hi"]
    assert s1.version == 1 and s1.updated_at == 150.0 and s1.created_at == 100.0
    assert [m.content for m in s1.messages] == ["hello", "hi"]
    assert all(m.tokens > 0 for m in s1.messages)
    assert s1.token_total == COUNT(Message("system", s0.system_prompt)) + sum(
        m.tokens for m in s1.messages
    )
    assert s1.turns[0] == plan.turn
    assert plan.turn.turn == 1 and plan.turn.messages == 2 and plan.turn.service == "ollama"
    assert (plan.turn.prompt_tokens, plan.turn.completion_tokens) == (40, 2)
    assert s1.active_model == "m1" and s1.models_used == ()
    assert s1.bytes > s0.bytes


def test_partial_turn_flags_the_turn_and_the_answer() -> None:
    s = plan_turn(
        fresh(),
        TurnInput(request=(Message("user", "q"),), answer=Message("assistant", "half an an"),
                  partial=True),
        COUNT, 1.0,
    ).state  # fmt: skip
    assert s.partial_turns == [1]
    assert s.messages[-1].metadata == {"partial": True}
    s = plan_turn(s, TurnInput(request=(Message("user", "q2"),), partial=True), COUNT, 2.0).state
    assert s.partial_turns == [1, 2]
    assert s.turns[1].messages == 1  # the request, no answer
    assert s.messages[-1].content == "q2"


def test_switching_models_recounts_and_rewrites() -> None:
    s = turn(fresh(), "hello", model="qwen2.5-coder:7b")
    llama = estimate_counter("llama")
    plan = plan_turn(
        s, TurnInput(request=(Message("user", "more " * 50),), model="llama3.1:8b"), llama, 300.0
    )
    assert plan.rewrite and plan.added == ()
    assert [m.tokens for m in plan.state.messages] == [llama(m) for m in plan.state.messages]
    assert plan.state.active_model == "llama3.1:8b"
    assert plan.state.models_used == ("qwen2.5-coder:7b",)


def test_models_used_track_the_models_before_the_active_one() -> None:
    s = fresh()
    for model in ["a", "b", "a", "c", None, "c"]:
        s = turn(s, "x", model=model)
    assert s.active_model == "c"
    assert s.models_used == ("b", "a")


@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=12))
def test_models_used_never_hold_the_active_model_or_duplicates(models: list[str | None]) -> None:
    s = fresh()
    for model in models:
        s = turn(s, "x", model=model)
    assert s.active_model not in s.models_used
    assert len(set(s.models_used)) == len(s.models_used)
    assert s.version == len(models) == len(s.turns)
    assert [t.turn for t in s.turns] == list(range(1, len(models) + 1))


def test_replaced_history_comes_before_the_turn_and_is_recounted() -> None:
    s = turn(fresh(), "old")
    history = (Message("user", "theirs", tokens=999_999), Message("assistant", "reply"))
    plan = plan_turn(s, TurnInput(history=tuple(msgspec.structs.replace(m, tokens=0)
                                                for m in history),
                                  request=(Message("user", "new"),), model="m1"), COUNT, 5.0)
    assert plan.rewrite
    assert [m.content for m in plan.state.messages] == ["theirs", "reply", "new"]
    assert all(0 < m.tokens < 1000 for m in plan.state.messages)


def test_a_compacted_history_that_holds_the_request_is_not_doubled() -> None:
    s = fresh(prompt="")
    for i in range(12):
        s = turn(s, f"turn {i} " + "words " * 40)
    request = (Message("user", "latest"),)
    result = compact([*s.messages, *request], 600,
                     CompactionPolicy(preserve_recent_messages=2), COUNT)
    assert result.ok and result.compacted
    record = compaction_record(result, at=9.0, turn=0, model="m1")
    plan = plan_turn(s, TurnInput(history=tuple(result.messages), request_in_history=True,
                                  request=request, answer=Message("assistant", "done"),
                                  compaction=record, model="m1"), COUNT, 9.0)
    contents = [m.content for m in plan.state.messages]
    assert contents.count("latest") == 1 and contents[-1] == "done"
    assert plan.state.messages[0].metadata.get("summary") is True
    assert plan.compaction is not None and plan.compaction.turn == 13
    assert plan.compaction.summarised > 0
    assert plan.state.compactions == (plan.compaction,)
    assert plan.turn.messages == 2


# --- expiry and eviction ----------------------------------------------------------------------


def test_expiry_uses_the_given_now() -> None:
    fps = [Footprint("a", 100.0, 10), Footprint("b", 50.0, 10), Footprint("c", 190.0, 10)]
    assert expired(fps, now=200.0, idle_expiry=100.0) == ["b", "a"]
    assert expired(fps, now=149.0, idle_expiry=100.0) == []
    assert expired(fps, now=1e12, idle_expiry=None) == []


def test_eviction_takes_the_least_recently_used_first_down_to_the_count() -> None:
    fps = [Footprint(str(i), float(t), 10) for i, t in enumerate([5, 1, 9, 3, 7])]
    assert choose_evictions(fps, max_sessions=3, max_bytes=10**9, used_bytes=50) == ["1", "3"]
    assert choose_evictions(fps, max_sessions=5, max_bytes=10**9, used_bytes=50) == []


def test_eviction_by_size_goes_below_the_low_water_mark() -> None:
    fps = [Footprint(str(i), float(i), 100) for i in range(10)]
    chosen = choose_evictions(fps, max_sessions=100, max_bytes=900, used_bytes=1000)
    # 1000 - 100k <= 0.9 * 900 = 810 -> k = 2
    assert chosen == ["0", "1"]
    assert 1000 - 100 * len(chosen) <= LOW_WATER * 900
    assert choose_evictions(fps, max_sessions=100, max_bytes=1000, used_bytes=1000) == []


def test_eviction_never_takes_a_protected_session() -> None:
    fps = [Footprint("old", 1.0, 500), Footprint("new", 2.0, 500)]
    assert choose_evictions(fps, max_sessions=1, max_bytes=10**9, used_bytes=0,
                            protect={"old"}) == ["new"]
    assert choose_evictions(fps, max_sessions=0, max_bytes=1, used_bytes=1000,
                            protect={"old", "new"}) == []


# --- wire views -------------------------------------------------------------------------------


def test_info_detail_and_export() -> None:
    s = fresh()
    for i in range(5):
        s = turn(s, f"q{i}", now=300.0 + i)
    info = info_of(s, idle_expiry=60.0)
    assert (info.turns, info.messages, info.expires_at) == (5, 10, 304.0 + 60.0)
    assert info_of(s, idle_expiry=None).expires_at is None
    detail = detail_of(s, last=3, idle_expiry=None)
    assert [m.content for m in detail.messages] == ["ok q3", "q4", "ok q4"]
    assert detail.messages_omitted == 7
    assert len(detail_of(s, last=-1, idle_expiry=None).messages) == 10
    assert detail_of(s, last=0, idle_expiry=None).messages == []

    export = export_of(s, now=999.0, idle_expiry=None)
    assert (export.format, export.version) == (EXPORT_FORMAT, EXPORT_VERSION)
    again = msgspec.json.decode(msgspec.json.encode(export), type=SessionExport)
    assert again == export
    assert [m.content for m in again.messages] == [m.content for m in s.messages]
    assert again.system_prompt == s.system_prompt and len(again.turns) == 5


def test_exact_counts_are_asked_for_near_the_window_only() -> None:
    assert needs_exact_count(950, 1000) and needs_exact_count(1100, 1000)
    assert not needs_exact_count(500, 1000) and not needs_exact_count(2000, 1000)
    assert not needs_exact_count(10, 0)


# --- configuration ----------------------------------------------------------------------------


def test_sessions_config_defaults_and_checks() -> None:
    s = parse_config("", fmt="toml", env={}, source="t.toml").sessions
    assert (s.idle_expiry, s.max_db_bytes, s.max_sessions) == (604800.0, 256 * 1024 * 1024, 1000)
    assert s.summary_model is None and s.exact_tokenize is True
    ok = parse_config("[sessions]\nidle_expiry = 0\nsummary_model = 'qwen2.5-coder:0.5b'\n",
                      fmt="toml", env={}, source="t.toml").sessions
    assert ok.idle_expiry == 0 and ok.summary_model == "qwen2.5-coder:0.5b"
    for text, path in [
        ("[sessions]\nidle_expiry = -1\n", "$.sessions.idle_expiry"),
        ("[sessions]\nmax_db_bytes = 1000\n", "$.sessions.max_db_bytes"),
        ("[sessions]\nmax_sessions = 0\n", "$.sessions.max_sessions"),
        ("[sessions]\nsummary_model = ' '\n", "$.sessions.summary_model"),
        ("[sessions]\nidle_expirey = 5\n", "$.sessions.idle_expirey"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, fmt="toml", env={}, source="t.toml")
        assert path in str(info.value), (text, str(info.value))
