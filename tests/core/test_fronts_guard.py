"""The HTTP fronts' guard: listen addresses, tokens, Host and Origin (routerd.core.fronts.guard),
and the ``http`` section's checks."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.config import ConfigError, HttpConfig, parse_config
from routerd.core.fronts.guard import (
    Guard,
    ListenAddress,
    admit_request,
    guard_from,
    host_of,
    parse_listen,
    parse_tokens,
)

TOKEN = "rd-0123456789abcdef0123"
OTHER = "rd-fedcba9876543210fedc"


def guard(**http: object) -> Guard:
    return guard_from(msgspec.structs.replace(HttpConfig(), **http), (TOKEN, OTHER))


def tcp(g: Guard, host: str | None = "127.0.0.1:11500", origin: str | None = None,
        auth: str | None = f"Bearer {TOKEN}") -> object:  # fmt: skip
    return admit_request(g, transport="tcp", host=host, origin=origin, authorization=auth)


# --- listen addresses and tokens ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "bind"),
    [
        ("127.0.0.1:11500", "127.0.0.1", 11500, "127.0.0.1"),
        ("[::1]:8000", "::1", 8000, "::1"),
        ("localhost:0", "localhost", 0, "127.0.0.1"),
        ("127.0.0.5:80", "127.0.0.5", 80, "127.0.0.5"),
    ],
)
def test_listen_addresses_on_loopback_parse(text: str, host: str, port: int, bind: str) -> None:
    parsed = parse_listen(text)
    assert isinstance(parsed, ListenAddress)
    assert (parsed.host, parsed.port, parsed.bind_host) == (host, port, bind)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0.0.0.0:11500", "not a loopback"),
        ("192.168.1.4:11500", "not a loopback"),
        ("example.com:80", "not a loopback"),
        ("127.0.0.1", "not host:port"),
        ("::1:80", "not host:port"),
        ("127.0.0.1:99999", "no valid port"),
        ("[::1]80", "not [address]:port"),
    ],
)
def test_listen_addresses_off_loopback_or_malformed_are_refused(text: str, why: str) -> None:
    problem = parse_listen(text)
    assert isinstance(problem, str) and why in problem


def test_token_file_lines_skip_comments_blanks_weak_and_repeated_tokens() -> None:
    text = f"# header\n\n  {TOKEN}  \nshort\nhas a space in it for sure\n{TOKEN}\n{OTHER}\n"
    assert parse_tokens(text) == (TOKEN, OTHER)


# --- tokens --------------------------------------------------------------------------------


def test_a_valid_token_is_admitted_and_identified() -> None:
    verdict = tcp(guard(), auth=f"Bearer {OTHER}")
    assert verdict == admit_request(guard(), transport="tcp", host="127.0.0.1:11500",
                                    origin=None, authorization=f"bearer   {OTHER}")  # fmt: skip
    assert verdict.allowed and verdict.token == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("auth", "kind"),
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("Bearer ", "missing_token"),
        ("Bearer rd-not-a-token-at-all", "bad_token"),
        (f"Bearer {TOKEN}x", "bad_token"),
    ],
)
def test_tcp_without_a_valid_token_is_refused_401(auth: str | None, kind: str) -> None:
    verdict = tcp(guard(), auth=auth)
    assert not verdict.allowed  # type: ignore[attr-defined]
    assert (verdict.status, verdict.kind) == (401, kind)  # type: ignore[attr-defined]
    assert TOKEN not in verdict.reason  # type: ignore[attr-defined]


def test_no_token_needed_when_not_required_but_one_still_identifies() -> None:
    g = guard(require_token=False)
    assert tcp(g, auth=None).allowed  # type: ignore[attr-defined]
    assert tcp(g).token == 0  # type: ignore[attr-defined]


def test_the_unix_socket_needs_no_token_and_checks_no_host() -> None:
    g = guard()
    verdict = admit_request(g, transport="unix", host="evil.example", origin="http://evil.example",
                            authorization=None)  # fmt: skip
    assert verdict.allowed and verdict.token is None
    with_token = admit_request(g, transport="unix", host=None, origin=None,
                               authorization=f"Bearer {TOKEN}")  # fmt: skip
    assert with_token.token == 0


# --- Host and Origin -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost:11500", "LOCALHOST", "127.0.0.1", "[::1]:11500", "127.8.9.10:1", "app.localhost"],
)
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert tcp(guard(), host=host).allowed  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "host", ["evil.example:11500", "rebind.attacker.test", "192.168.1.2:11500", "", None, "::1"]
)
def test_dns_rebinding_hosts_are_refused_403(host: str | None) -> None:
    verdict = tcp(guard(), host=host)
    assert not verdict.allowed  # type: ignore[attr-defined]
    assert (verdict.status, verdict.kind) == (403, "bad_host")  # type: ignore[attr-defined]


def test_allowed_hosts_adds_names() -> None:
    g = guard(allowed_hosts=["devbox.internal"])
    assert tcp(g, host="devbox.internal:11500").allowed  # type: ignore[attr-defined]


def test_origin_absent_or_same_origin_is_fine_others_are_refused() -> None:
    g = guard()
    assert tcp(g, origin=None).allowed  # type: ignore[attr-defined]
    same = tcp(g, host="localhost:11500", origin="http://localhost:11500")
    assert same.allowed and same.cors is None  # type: ignore[attr-defined]
    for origin in ("http://localhost:3000", "https://evil.example", "null", "file://"):
        verdict = tcp(g, host="localhost:11500", origin=origin)
        assert (verdict.status, verdict.kind) == (403, "bad_origin"), origin  # type: ignore[attr-defined]


def test_an_allowed_origin_gets_cors_and_still_needs_a_token() -> None:
    g = guard(allowed_origins=["http://localhost:3000/"])
    ok = tcp(g, host="localhost:11500", origin="HTTP://LOCALHOST:3000")
    assert ok.allowed and ok.cors == "http://localhost:3000"  # type: ignore[attr-defined]
    no_token = tcp(g, host="localhost:11500", origin="http://localhost:3000", auth=None)
    assert no_token.kind == "missing_token"  # type: ignore[attr-defined]


@given(st.text(max_size=40))
def test_host_of_never_raises_and_rejects_what_it_cannot_read(text: str) -> None:
    host = host_of(text)
    assert host is None or host == host.lower()


# --- the configuration ---------------------------------------------------------------------


def test_the_section_defaults_are_off_loopback_and_token_protected() -> None:
    http = parse_config("", fmt="toml", env={}).http
    assert not http.enabled and http.listen == ["127.0.0.1:11500"] and http.require_token


@pytest.mark.parametrize(
    ("toml", "path", "words"),
    [
        ('listen = ["0.0.0.0:11500"]', "$.http.listen[0]", "not a loopback"),
        ('listen = ["127.0.0.1:1", "127.0.0.1:1"]', "$.http.listen[1]", "twice"),
        ("enabled = true\nlisten = []", "$.http.listen", "nothing to listen on"),
        ('unix_socket = ""', "$.http.unix_socket", "must be a path"),
        ('allowed_hosts = ["bad host"]', "$.http.allowed_hosts[0]", "not a host name"),
        ('allowed_origins = ["localhost:3000"]', "$.http.allowed_origins[0]", "not an origin"),
        ("max_body_bytes = 10", "$.http.max_body_bytes", ">= 1024"),
        ("tokens = []", "$.http.tokens", "unknown key"),
    ],
)
def test_bad_http_settings_fail_with_their_path(toml: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[http]\n{toml}\n", fmt="toml", env={})
    assert info.value.path == path and words in str(info.value), str(info.value)
