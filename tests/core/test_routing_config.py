"""The ``routing`` configuration section and ``agents.*.preferred_models``."""

from __future__ import annotations

import pytest

from routerd.core.config import ConfigError, RoutingConfig, default_config, parse_config


def toml(text: str) -> object:
    return parse_config(text, fmt="toml", env={}, source="t.toml")


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        toml(text)
    return info.value


def test_defaults() -> None:
    r = default_config().routing
    assert r == RoutingConfig()
    assert (r.default_category, r.min_confidence, r.quality_tolerance) == ("coding", 0.4, 5)
    assert (r.swap_wait, r.max_attempts, r.reserve_for_answer, r.keep_alive) == (
        10.0,
        6,
        2048,
        None,
    )
    t = r.timeouts
    assert (t.connect, t.first_token, t.idle, t.overall) == (5.0, 120.0, 60.0, 300.0)
    assert r.concurrency == {}


def test_a_full_section_loads() -> None:
    cfg = parse_config(
        """
[routing]
default_category = "analysis"
min_confidence = 0.6
quality_tolerance = 8
swap_wait = 0
keep_alive = "30m"
round_robin = false
[routing.timeouts]
first_token = 240
[routing.concurrency.gpu-box]
per_model = 2
total = 3
models = { "qwen2.5-coder:32b" = 1 }
[agents.aider]
preferred_models = ["qwen2.5-coder:32b"]
""",
        fmt="toml",
        env={},
    )
    r = cfg.routing
    assert (r.default_category, r.min_confidence, r.quality_tolerance, r.swap_wait) == (
        "analysis",
        0.6,
        8,
        0.0,
    )
    assert (r.keep_alive, r.round_robin) == ("30m", False)
    assert (r.timeouts.first_token, r.timeouts.idle) == (240.0, 60.0)
    gpu = r.concurrency["gpu-box"]
    assert (gpu.per_model, gpu.total, gpu.models) == (2, 3, {"qwen2.5-coder:32b": 1})
    assert cfg.agents["aider"].preferred_models == ["qwen2.5-coder:32b"]
    assert cfg.agents["aider"].context_format == "openai"  # merged over the built-in entry


@pytest.mark.parametrize("value", ["-1", "0", "300", '"5m"', '"1h30m"', '"-1m"', '"2.5s"'])
def test_keep_alive_accepts_seconds_and_durations(value: str) -> None:
    toml(f"[routing]\nkeep_alive = {value}\n")


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ('[routing]\nkeep_alive = "300"\n', "$.routing.keep_alive", "not a duration"),
        ('[routing]\nkeep_alive = "forever"\n', "$.routing.keep_alive", "not a duration"),
        ('[routing]\ndefault_category = "planning"\n', "$.routing.default_category", "one of"),
        ("[routing]\nmin_confidence = 1.5\n", "$.routing.min_confidence", "<= 1"),
        ("[routing]\nswap_wait = -1\n", "$.routing.swap_wait", "zero or more"),
        ("[routing]\nquality_tolerance = 101\n", "$.routing.quality_tolerance", "<= 100"),
        ("[routing]\nmax_attempts = 0\n", "$.routing.max_attempts", ">= 1"),
        ("[routing.timeouts]\nidle = 0\n", "$.routing.timeouts.idle", "more than 0"),
        ("[routing.timeouts]\nconect = 1\n", "$.routing.timeouts.conect", "unknown"),
        ("[routing.concurrency.ollama]\nper_model = 0\n", "$.routing.concurrency.ollama", ">= 1"),
        ('[agents.x]\npreferred_models = [" "]\n', "$.agents.x.preferred_models[0]", "empty"),
    ],
)
def test_bad_values_name_their_path(text: str, path: str, words: str) -> None:
    err = error(text)
    assert err.path is not None and err.path.startswith(path), str(err)
    assert words in str(err)
