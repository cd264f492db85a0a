"""The egress policy: names, literal addresses, CIDRs, resolution results."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.config import SecurityConfig
from routerd.core.egress import (
    EgressPolicy,
    check_address,
    check_host,
    check_resolved,
    check_url,
    policy_from_config,
)

DEFAULT = policy_from_config(SecurityConfig())


def policy(
    hosts: list[str], cidrs: list[str] | None = None, external: bool = False
) -> EgressPolicy:
    return policy_from_config(
        SecurityConfig(allowed_hosts=hosts, allowed_cidrs=cidrs or [], allow_external=external)
    )


def test_default_is_loopback_only() -> None:
    assert check_host(DEFAULT, "127.0.0.1").allowed
    assert check_host(DEFAULT, "127.8.9.10").allowed
    assert check_host(DEFAULT, "::1").allowed
    assert check_host(DEFAULT, "[::1]").allowed
    assert check_host(DEFAULT, "localhost").allowed
    assert check_host(DEFAULT, "LOCALHOST.").allowed
    for host in ("10.0.0.1", "192.168.1.100", "172.17.0.1", "8.8.8.8", "0.0.0.0", "::"):
        d = check_host(DEFAULT, host)
        assert not d.allowed, host
        assert "not in any allowed network" in d.reason
    assert not check_host(DEFAULT, "host.docker.internal").allowed


def test_unlisted_name_is_refused_without_resolution() -> None:
    d = check_host(DEFAULT, "gpu.lan")
    assert not d.allowed
    assert "not in security.allowed_hosts, so not resolved" in d.reason


def test_cidr_written_inside_allowed_hosts_counts_as_a_network() -> None:
    p = policy(["localhost", "192.168.0.0/16"])
    assert check_host(p, "192.168.1.100").allowed
    assert not check_host(p, "192.169.0.1").allowed


def test_literal_ip_in_allowed_hosts_is_a_single_address() -> None:
    p = policy(["10.1.2.3", "fd00::5"])
    assert check_host(p, "10.1.2.3").allowed
    assert not check_host(p, "10.1.2.4").allowed
    assert check_host(p, "fd00::5").allowed
    assert not check_host(p, "fd00::6").allowed


def test_ipv4_mapped_ipv6_is_checked_as_ipv4() -> None:
    assert check_address(DEFAULT, "::ffff:127.0.0.1").allowed
    assert not check_address(DEFAULT, "::ffff:8.8.8.8").allowed
    assert not check_address(policy([], ["::/0"]), "::ffff:8.8.8.8").allowed


def test_zone_is_ignored() -> None:
    p = policy([], ["fe80::/10"])
    assert check_address(p, "fe80::1%eth0").allowed


def test_listed_name_must_resolve_inside_the_list() -> None:
    p = policy(["gpu.lan"], ["10.0.0.0/8"])
    assert check_host(p, "GPU.lan").allowed
    assert check_resolved(p, "gpu.lan", ["10.0.0.7"]).allowed
    d = check_resolved(p, "gpu.lan", ["10.0.0.7", "8.8.8.8"])
    assert not d.allowed and "resolved to 8.8.8.8" in d.reason
    assert not check_resolved(p, "gpu.lan", []).allowed
    assert not check_resolved(p, "other.lan", ["10.0.0.7"]).allowed


def test_localhost_follows_the_loopback_networks() -> None:
    p = policy(["localhost"], ["10.0.0.0/8"])
    d = check_host(p, "localhost")
    assert not d.allowed and "no loopback network" in d.reason
    assert check_host(policy(["localhost"], ["127.0.0.0/8"]), "app.localhost").allowed


def test_allow_external_allows_everything() -> None:
    p = policy([], [], external=True)
    assert check_host(p, "example.invalid").allowed
    assert check_resolved(p, "example.invalid", ["8.8.8.8"]).allowed


def test_check_url() -> None:
    assert check_url(DEFAULT, "http://127.0.0.1:11434/api/tags").allowed
    assert check_url(DEFAULT, "http://[::1]:8080/").allowed
    assert not check_url(DEFAULT, "http://8.8.8.8/").allowed
    assert not check_url(DEFAULT, "file:///etc/passwd").allowed


@given(st.ip_addresses(v=4))
def test_v4_membership_matches_ipaddress(ip: ipaddress.IPv4Address) -> None:
    p = policy([], ["10.0.0.0/8", "192.168.0.0/16"])
    expected = ip in ipaddress.ip_network("10.0.0.0/8") or ip in ipaddress.ip_network(
        "192.168.0.0/16"
    )
    assert check_address(p, ip).allowed is expected
    assert check_address(p, str(ip)).allowed is expected


@pytest.mark.parametrize("bad", ["not-an-ip", ""])
def test_check_address_rejects_non_addresses(bad: str) -> None:
    assert not check_address(DEFAULT, bad).allowed
