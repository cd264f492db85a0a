"""Token estimation, calibration and the tokenize helpers."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.context import Message
from routerd.core.tokens import (
    REPLY_PRIMING,
    ROLE_OVERHEAD,
    SCALE_MAX,
    SCALE_MIN,
    Calibration,
    chars_per_token,
    count_message,
    count_messages,
    count_text,
    decode_calibrations,
    encode_calibrations,
    estimate_parts,
    estimate_text,
    message_overhead,
    observe_prompt,
    observe_text,
    parse_tokenize_response,
    resolve_family,
    tokenize_request,
)

PROSE = (
    "The router keeps a session per editor connection and compacts it when the context window "
    "fills up, keeping the system prompt and the latest messages intact. "
) * 4
CODE = (
    "def count(msgs: list[Message]) -> int:\n"
    "    return sum(m.tokens for m in msgs if m.role != 'system')  # {x: [1, 2]}\n"
) * 4


# --- Families ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "key"),
    [
        ("qwen", "qwen"),
        ("Qwen2.5-Coder", "qwen"),
        ("qwen2", "qwen"),
        ("llama", "llama"),
        ("deepseek2", "deepseek"),
        ("mixtral", "mixtral"),
        ("mistral", "mistral"),
        ("gemma", "default"),
        ("", "default"),
    ],
)
def test_resolve_family(family: str, key: str) -> None:
    assert resolve_family(family) == key


def test_seed_ratios() -> None:
    assert chars_per_token("qwen") == 3.5
    assert chars_per_token("llama") == 3.8
    assert chars_per_token("deepseek") == chars_per_token("mistral") == 4.0
    assert chars_per_token("unknown-family") == 4.0


def test_prose_follows_the_family_ratio() -> None:
    assert count_text(PROSE, "default") == pytest.approx(len(PROSE) / 4.0, abs=1)
    assert count_text(PROSE, "qwen") == pytest.approx(len(PROSE) / 3.5, abs=1)


def test_code_costs_more_tokens_per_character_than_prose() -> None:
    code = count_text(CODE, "llama") / len(CODE)
    prose = count_text(PROSE, "llama") / len(PROSE)
    assert code > prose * 1.2


def test_fenced_block_counts_as_code() -> None:
    plain = "word " * 40
    fenced = "```\n" + plain + "\n```"
    assert count_text(fenced, "default") > count_text(plain, "default") * 1.2


def test_non_ascii_is_measured_in_bytes() -> None:
    # Four CJK characters are 12 UTF-8 bytes: about 3 tokens, not 1.
    assert count_text("你好世界", "default") == 3
    assert count_text("🤗" * 4, "default") == 4


def test_empty_and_tiny_texts() -> None:
    assert count_text("", "qwen") == 0
    assert estimate_text("", "qwen") == 0.0
    assert count_text("a", "qwen") == 1


@given(st.text(st.characters(codec=None, exclude_categories=())), st.sampled_from(["qwen", "x"]))
@settings(max_examples=200)
def test_counting_never_raises_and_is_positive(text: str, family: str) -> None:
    n = count_text(text, family)
    assert n == count_text(text, family)
    assert (n == 0) == (text == "")


def test_message_overhead_by_role_and_name() -> None:
    assert message_overhead("user") == ROLE_OVERHEAD["user"]
    assert message_overhead("tool") > message_overhead("user")
    assert message_overhead("tool", tool_call_id="call_1") > message_overhead("tool")
    assert message_overhead("developer") == 5  # unknown roles get the default framing


def test_count_messages_adds_overheads_and_priming() -> None:
    msgs = [Message("system", "Be brief."), Message("user", PROSE)]
    expected = sum(count_message(m, "qwen") for m in msgs) + REPLY_PRIMING
    assert count_messages(msgs, "qwen") == expected
    assert count_messages([], "qwen") == 0


def test_calibration_scales_content_not_overhead() -> None:
    msg = Message("user", PROSE)
    doubled = Calibration(scale=2.0)
    assert count_text(PROSE, "qwen", doubled) == pytest.approx(2 * count_text(PROSE, "qwen"), abs=1)
    overhead = message_overhead("user")
    assert count_message(msg, "qwen", doubled) - overhead == count_text(PROSE, "qwen", doubled)


# --- Calibration ---------------------------------------------------------------------------


@given(st.floats(0.5, 2.5), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_calibration_converges_from_noisy_observations(true_ratio: float, seed: int) -> None:
    rng = random.Random(seed)
    calib = Calibration()
    for _ in range(300):
        estimated = rng.uniform(100, 5000)
        actual = round(estimated * true_ratio * rng.uniform(0.85, 1.15))
        calib = calib.observe(estimated, actual)
    assert calib.scale == pytest.approx(true_ratio, rel=0.08)
    assert calib.samples == 300


def test_calibration_ignores_absurd_observations() -> None:
    calib = Calibration()
    for _ in range(10):
        calib = calib.observe(1000, 1200)
    scale = calib.scale
    absurd = [(1000, 1), (1000, 100_000), (1000, 0), (1000, -5), (10, 9), (float("nan"), 10)]
    absurd += [(float("inf"), 10), (1000, 2600)]  # the last: > 2x the current scale, after warm-up
    for estimated, actual in absurd:
        calib = calib.observe(estimated, actual)
    assert calib.scale == scale
    assert calib.samples == 10
    assert calib.rejected == len(absurd)


def test_calibration_is_immutable_and_bounded() -> None:
    calib = Calibration()
    after = calib.observe(1000, 3900)
    assert calib.scale == 1.0 and calib.samples == 0
    assert SCALE_MIN <= after.scale <= SCALE_MAX
    assert after.scale > 1.0


@given(
    st.lists(
        st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**9), 10**9)),
        max_size=50,
    )
)
def test_calibration_stays_in_range_whatever_it_sees(obs: list[tuple[float, int]]) -> None:
    calib = Calibration()
    for estimated, actual in obs:
        calib = calib.observe(estimated, actual)
        assert SCALE_MIN <= calib.scale <= SCALE_MAX
    assert calib.samples + calib.rejected == len(obs)


def test_observe_prompt_subtracts_overhead_and_skips_truncated_counts() -> None:
    msgs = [Message("system", "Be brief."), Message("user", PROSE * 3)]
    content = sum(estimate_text(m.content, "qwen") for m in msgs)
    overhead = sum(message_overhead(m.role) for m in msgs) + REPLY_PRIMING
    actual = round(content * 1.3) + overhead
    calib = observe_prompt(Calibration(), msgs, "qwen", actual)
    # The first observation weighs 1/2 against the prior of 1.0.
    assert calib.scale == pytest.approx(1.15, abs=0.01)
    truncated = observe_prompt(Calibration(), msgs, "qwen", 2048, window=2048)
    assert truncated.scale == 1.0 and truncated.rejected == 1


def test_code_and_prose_scale_separately() -> None:
    calib = Calibration(scale=1.0, code_scale=2.0)
    assert count_text(PROSE, "qwen", calib) == count_text(PROSE, "qwen")
    assert count_text(CODE, "qwen", calib) == pytest.approx(2 * count_text(CODE, "qwen"), abs=1)
    assert calib.largest == 2.0


@given(
    st.floats(0.5, 2.0),
    st.floats(0.7, 1.6),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=30, deadline=None)
def test_calibration_converges_on_mixed_prose_and_code(
    prose_ratio: float, code_factor: float, seed: int
) -> None:
    """Prompts with varying shares of code: both scales find their own ratio, which one scale
    for both cannot (it fits the average mix, and misses any other)."""
    code_ratio = prose_ratio * code_factor
    rng = random.Random(seed)
    calib = Calibration()
    for _ in range(300):
        estimated = rng.uniform(100, 5000)
        code = estimated * rng.uniform(0.0, 0.9)
        actual = (estimated - code) * prose_ratio + code * code_ratio
        calib = calib.observe(estimated, round(actual * rng.uniform(0.95, 1.05)), code=code)
    assert calib.scale == pytest.approx(prose_ratio, rel=0.08)
    assert calib.code == pytest.approx(code_ratio, rel=0.08)
    assert calib.samples == 300
    # What it learnt counts a text of either kind within a few percent.
    for text in (PROSE * 3, CODE * 3):
        prose, code = estimate_parts(text, "qwen")
        true = prose * prose_ratio + code * code_ratio
        assert count_text(text, "qwen", calib) == pytest.approx(true, rel=0.1)


def test_code_follows_prose_when_observations_hold_no_code() -> None:
    calib = Calibration()
    for _ in range(40):
        calib = calib.observe(1000, 1300)
    assert calib.scale == pytest.approx(1.3, abs=0.01)
    assert calib.code == pytest.approx(1.3, abs=0.05)


def test_observe_prompt_and_observe_text_split_code_from_prose() -> None:
    msgs = [Message("system", PROSE), Message("user", CODE * 3)]
    overhead = sum(message_overhead(m.role) for m in msgs) + REPLY_PRIMING
    truth = Calibration(scale=0.9, code_scale=1.4)
    calib = Calibration()
    for _ in range(60):
        calib = observe_prompt(calib, msgs, "qwen", count_messages(msgs, "qwen", truth))
        calib = observe_text(calib, PROSE * 2, "qwen", count_text(PROSE * 2, "qwen", truth))
    assert calib.scale == pytest.approx(0.9, abs=0.03)
    assert calib.code == pytest.approx(1.4, abs=0.05)
    assert count_messages(msgs, "qwen", calib) == pytest.approx(
        count_messages(msgs, "qwen", truth), rel=0.02
    )
    assert overhead < count_messages(msgs, "qwen", calib)


def test_calibrations_written_before_code_scales_still_load_and_learn_on() -> None:
    (old,) = decode_calibrations(b'{"m": {"scale": 1.2, "samples": 40, "rejected": 1}}').values()
    assert old.code == old.scale == 1.2
    assert count_text(CODE, "qwen", old) == count_text(CODE, "qwen", Calibration(scale=1.2))
    # It goes on from what it knew: one more observation moves it by a tenth, not half.
    after = old.observe(1000, 1000)
    assert after.scale == pytest.approx(1.2 + 0.1 * (1.0 - 1.2), abs=0.01)
    assert after.samples == 41 and after.rejected == 1
    assert decode_calibrations(encode_calibrations({"m": after})) == {"m": after}


def test_calibrations_round_trip_and_reject_tampering() -> None:
    table = {"qwen2.5-coder:7b": Calibration(scale=1.2, samples=4, rejected=1)}
    assert decode_calibrations(encode_calibrations(table)) == table
    with pytest.raises(msgspec.ValidationError):
        decode_calibrations(b'{"m": {"scale": 100.0}}')
    with pytest.raises(msgspec.DecodeError):
        decode_calibrations(b"not json")
    with pytest.raises(msgspec.ValidationError):  # sums no observations can add up to
        decode_calibrations(b'{"m": {"scale": 1.0, "sums": [1.0, 5.0, 1.0, 1.0, 1.0]}}')
    with pytest.raises(msgspec.ValidationError):
        decode_calibrations(b'{"m": {"scale": 1.0, "code_scale": 9.0}}')


# --- Tokenize endpoints --------------------------------------------------------------------


def test_llama_cpp_tokenize_request() -> None:
    call = tokenize_request("hello")
    assert call.path == "/tokenize"
    assert msgspec.json.decode(call.body) == {"content": "hello", "add_special": False}


def test_llama_cpp_python_tokenize_request() -> None:
    call = tokenize_request("hello", "llama-cpp-python")
    assert call.path == "/extras/tokenize/count"
    assert msgspec.json.decode(call.body) == {"input": "hello"}


def test_tokenize_request_survives_lone_surrogates() -> None:
    body = msgspec.json.decode(tokenize_request("a\ud800b").body)
    assert body["content"] == "a?b"


@pytest.mark.parametrize(
    ("body", "dialect", "expected"),
    [
        (b'{"tokens":[15339,1917]}', "llama.cpp", 2),
        (b'{"tokens":[]}', "llama.cpp", 0),
        (b'{"tokens":[{"id":1,"piece":"a"},{"id":2,"piece":[228,189]}]}', "llama.cpp", 2),
        (b'{"count":7}', "llama-cpp-python", 7),
        (b'{"error":{"code":503,"message":"Loading model"}}', "llama.cpp", None),
        (b'{"tokens":["x"]}', "llama.cpp", None),
        (b'{"count":-1}', "llama-cpp-python", None),
        (b"<html>", "llama.cpp", None),
        (b"", "llama-cpp-python", None),
    ],
)
def test_parse_tokenize_response(body: bytes, dialect: str, expected: int | None) -> None:
    assert parse_tokenize_response(body, dialect) == expected  # type: ignore[arg-type]
