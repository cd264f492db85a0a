"""What systemd passes in the environment, and the STATUS= and IPAddressAllow= texts."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.config import default_config
from routerd.core.service_manager import (
    STATUS_MAX,
    ip_address_allow,
    ip_allow_drop_in,
    journal_stream_matches,
    status_line,
    watchdog_interval,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # another process's
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}, 0.1),
    ],
)
def test_watchdog_interval_is_half_the_timeout_and_only_ours(env, expected):
    assert watchdog_interval(env, 42) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2049:123456", True),
        ("2049:123457", False),
        ("2048:123456", False),
        (None, False),
        ("", False),
        ("2049", False),
        ("2049:", False),
        (":123456", False),
        ("x:123456", False),
        ("2049:123456:7", False),
    ],
)
def test_journal_stream_must_name_stderr_exactly(value, expected):
    assert journal_stream_matches(value, 2049, 123456) is expected


def test_status_line_joins_component_summaries_in_order():
    components = {
        "services": {"summary": "3/10 online", "servers": []},
        "serena": {"summary": "Serena warm", "state": "ready"},
        "sessions": {"count": 4},  # no summary: left out
        "audit": "not a map",
    }
    assert status_line(components, socket_path="/run/x.sock") == (
        "services: 3/10 online, Serena warm"
    )


def test_status_line_uses_state_when_there_is_no_summary():
    assert status_line({"serena": {"state": "starting"}}, socket_path=None) == "serena: starting"


def test_status_line_without_summaries_names_the_socket():
    assert status_line({}, socket_path="/run/routerd/routerd.sock") == (
        "serving on /run/routerd/routerd.sock"
    )
    assert status_line({"x": {"summary": "  "}}, socket_path=None) == "serving on ?"


def test_a_summary_cannot_smuggle_another_assignment():
    line = status_line({"evil": {"summary": "ok\nREADY=1\nMAINPID=1"}}, socket_path=None)
    assert "\n" not in line
    assert line == "evil: ok READY=1 MAINPID=1"


@given(st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({"summary": st.text()})))
def test_status_line_is_always_one_short_printable_line(components):
    line = status_line(components, socket_path="/s")
    assert line.isprintable()
    assert 0 < len(line) <= STATUS_MAX


def test_ip_allow_has_loopback_then_networks_and_addresses():
    nets, names = ip_address_allow(
        ["localhost", "127.0.0.1", "::1", "gpu-box.lan", "192.168.1.100", "[fd00::5]"],
        ["127.0.0.0/8", "::1/128", "10.20.0.0/16", "10.20.0.0/16"],
        ["http://192.168.1.100:8000", "http://build.lan:8080", "http://127.0.0.1:11434"],
    )
    assert nets == [
        "127.0.0.0/8", "::1/128", "10.20.0.0/16", "192.168.1.100/32", "fd00::5/128",
    ]
    assert names == ["gpu-box.lan", "build.lan"]


def test_ip_allow_of_the_defaults_is_loopback_only():
    nets, names = ip_address_allow(["localhost", "127.0.0.1", "::1"], ["127.0.0.0/8", "::1/128"])
    assert nets == ["127.0.0.0/8", "::1/128"]
    assert names == []


def test_ip_allow_drops_addresses_inside_networks_already_allowed():
    nets, _ = ip_address_allow(["192.168.1.100", "10.0.0.1"], ["192.168.0.0/16"])
    assert nets == ["127.0.0.0/8", "::1/128", "192.168.0.0/16", "10.0.0.1/32"]


def test_drop_in_allows_the_configured_networks():
    config = default_config()
    sec = msgspec.structs.replace(
        config.security, allowed_hosts=["localhost", "gpu.lan"], allowed_cidrs=["10.1.0.0/16"]
    )
    text, warnings = ip_allow_drop_in(msgspec.structs.replace(config, security=sec), "/etc/x.toml")
    assert "[Service]\nIPAddressAllow=127.0.0.0/8 ::1/128 10.1.0.0/16\n" in text
    assert "/etc/x.toml" in text
    assert len(warnings) == 1 and "gpu.lan" in warnings[0]


def test_drop_in_lifts_the_deny_only_when_external_access_is_allowed():
    config = default_config()
    sec = msgspec.structs.replace(config.security, allow_external=True)
    config = msgspec.structs.replace(config, environment="connected", security=sec)
    text, warnings = ip_allow_drop_in(config, None)
    assert text.endswith("IPAddressDeny=\n") and "IPAddressAllow" not in text
    assert any("allow_external" in w for w in warnings)
