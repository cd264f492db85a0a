"""The service-kind table: defaults checked against the servers' documentation."""

from __future__ import annotations

import pytest

from routerd.core.services import (
    IDENTIFIED_KINDS,
    SERVICES,
    Endpoint,
    canonical_base_url,
    custom_spec,
    cycle_plan,
    default_endpoints,
    group_endpoints,
    identity_plan,
    spec_for,
)

# Ports as the servers' own documentation and source state them (see services.py comments).
DOCUMENTED_PORTS = {
    "ollama": 11434,
    "lmstudio": 1234,
    "jan": 1337,
    "openwebui": 8080,  # its own port; 3000 is the Docker mapping
    "localai": 8080,
    "vllm": 8000,
    "llamacpp": 8080,
    "koboldcpp": 5001,
    "gpt4all": 4891,
    "textgen": 5000,
    "llama_cpp_python": 8000,
}


def test_every_seed_kind_is_in_the_table() -> None:
    kinds = {s.kind for s in SERVICES}
    assert kinds >= {
        "ollama",
        "lmstudio",
        "jan",
        "openwebui",
        "localai",
        "vllm",
        "llamacpp",
        "koboldcpp",
        "gpt4all",
        "textgen",
    }
    assert kinds <= set(IDENTIFIED_KINDS)
    assert len(kinds) == len(SERVICES)


@pytest.mark.parametrize(("kind", "port"), sorted(DOCUMENTED_PORTS.items()))
def test_documented_ports(kind: str, port: int) -> None:
    assert port in spec_for(kind).ports  # type: ignore[arg-type]


def test_default_urls_use_ipv4_loopback() -> None:
    # GPT4All listens on 127.0.0.1 only; "localhost" may resolve to ::1 first.
    for spec in SERVICES:
        assert all(url.startswith("http://127.0.0.1:") for url in spec.base_urls)


def test_api_keys() -> None:
    assert spec_for("jan").api_key == "required"
    assert spec_for("openwebui").api_key == "required"
    assert spec_for("ollama").api_key == "never"
    assert spec_for("lmstudio").api_key == "optional"


def test_every_kind_has_a_health_or_models_step_each_cycle() -> None:
    for kind in IDENTIFIED_KINDS:
        plan = cycle_plan(kind)
        assert plan, kind
        assert any(s.purpose in ("health", "models") for s in plan), kind


def test_seed_paths_that_do_not_exist_are_gone() -> None:
    paths = {(s.kind, step.path) for s in SERVICES for step in s.plan}
    assert ("openwebui", "/api/health") not in paths
    assert ("koboldcpp", "/api/v1/info") not in paths
    assert ("textgen", "/api/v1/model") not in paths
    assert ("openwebui", "/health") in paths


def test_ollama_show_is_per_model_post() -> None:
    (show,) = [s for s in spec_for("ollama").plan if s.per_model]
    assert (show.path, show.method, show.parser) == ("/api/show", "POST", "ollama_show")


def test_identity_plan_is_the_union_without_duplicates() -> None:
    plan = identity_plan(("llamacpp", "localai", "openwebui"))
    paths = [s.path for s in plan]
    assert len(paths) == len(set(paths))
    assert {
        "/health",
        "/props",
        "/slots",
        "/readyz",
        "/.well-known/localai.json",
        "/api/version",
        "/v1/models",
    } <= set(paths)
    assert not any(s.per_model for s in identity_plan(("ollama",)))


def test_custom_spec() -> None:
    assert custom_spec("openai").kind == "custom"
    assert [s.path for s in custom_spec("openai").plan] == ["/v1/models"]
    assert "/api/tags" in [s.path for s in custom_spec("ollama").plan]
    assert spec_for("custom").kind == "openai_compat"


def test_default_endpoints_probe_each_port_once() -> None:
    endpoints = default_endpoints()
    urls = [e.base_url for e in endpoints]
    assert len(urls) == len(set(urls))
    assert Endpoint("http://127.0.0.1:9931", ("llamacpp",)) in endpoints


def test_group_endpoints_from_config_spellings() -> None:
    claims = [
        ("localai", "http://localhost:8080"),
        ("llamacpp", "http://127.0.0.1:8080/"),
        ("ollama", "http://localhost:11434"),
    ]
    assert group_endpoints(claims) == (  # type: ignore[arg-type]
        Endpoint("http://localhost:8080", ("localai", "llamacpp")),
        Endpoint("http://localhost:11434", ("ollama",)),
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://localhost:11434/", "http://127.0.0.1:11434"),
        ("http://[::1]:8080", "http://127.0.0.1:8080"),
        ("HTTP://LocalHost:1234", "http://127.0.0.2:1234"),
        ("http://box.lan", "http://box.lan:80/"),
        ("https://box.lan/v1/", "https://box.lan:443/v1"),
    ],
)
def test_canonical_base_url_equal(a: str, b: str) -> None:
    assert canonical_base_url(a) == canonical_base_url(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8081"),
        ("http://box:80", "https://box:80"),
        ("http://a.lan:80", "http://b.lan:80"),
    ],
)
def test_canonical_base_url_different(a: str, b: str) -> None:
    assert canonical_base_url(a) != canonical_base_url(b)


def test_canonical_base_url_never_raises() -> None:
    for junk in ("", "::::", "http://[bad", "http://host:notaport", "no scheme"):
        assert isinstance(canonical_base_url(junk), str)
