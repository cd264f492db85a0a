"""Security settings: endpoints outside the allowlist are rejected at load, new keys checked."""

from __future__ import annotations

import pytest

from routerd.core.config import ConfigError, parse_config


def toml(text: str) -> object:
    return parse_config(text, fmt="toml", env={})


def test_literal_endpoint_outside_allowlist_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        toml('[[services.custom_endpoints]]\nname = "gpu"\nendpoint = "http://10.0.0.5:8000"\n')
    msg = str(info.value)
    assert "$.services.custom_endpoints[0].endpoint" in msg
    assert "outside the egress allowlist" in msg and "security.allowed_cidrs" in msg


def test_builtin_endpoint_and_unlisted_name_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"\$\.services\.ollama\.endpoint.*allowed_hosts"):
        toml('[services.ollama]\nendpoint = "http://ollama.lan:11434"\n')


def test_listed_endpoints_load() -> None:
    cfg = toml(
        '[services.ollama]\nendpoint = "http://ollama.lan:11434"\n'
        '[[services.custom_endpoints]]\nname = "gpu"\nendpoint = "http://192.168.1.100:8000"\n'
        '[security]\nallowed_hosts = ["localhost", "ollama.lan", "192.168.0.0/16"]\n'
    )
    assert cfg is not None


def test_connected_environment_with_allow_external() -> None:
    cfg = toml(
        'environment = "connected"\n[security]\nallow_external = true\n'
        '[[services.custom_endpoints]]\nname = "x"\nendpoint = "https://203.0.113.9"\n'
    )
    assert cfg is not None


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[security]\naudit_queue_full = "wait"\n', "$.security.audit_queue_full"),
        ("[security]\nallowed_groups = ['bad group']\n", "$.security.allowed_groups[0]"),
        (
            '[[security.clients]]\nuid = 5\ngroup = "ops"\nmethods = ["status"]\n',
            "$.security.clients[0]",
        ),
        ("[[security.clients]]\nuid = 5\nmethods = []\n", "$.security.clients[0].methods"),
        (
            '[[security.model_checksums]]\npath = "/m/x.gguf"\nsha256 = "abc"\n',
            "$.security.model_checksums[0].sha256",
        ),
        ("[security]\naudit_max_bytes = 10\n", "$.security.audit_max_bytes"),
    ],
)
def test_bad_security_values(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        toml(text)
    assert info.value.path == path


def test_good_security_values() -> None:
    cfg = toml(
        '[security]\nallowed_uids = [1001]\nallowed_groups = ["routerd"]\n'
        'audit_queue_full = "drop"\nlog_query_text = false\n'
        '[[security.clients]]\ngroup = "ops"\nmethods = ["status", "audit.*"]\n'
        f'[[security.model_checksums]]\npath = "/m/x.gguf"\nsha256 = "{"a" * 64}"\nmodel = "x"\n'
    )
    assert cfg is not None
