"""Which addresses are probed, under which names; and WSL/container detection."""

from __future__ import annotations

import pytest

from routerd.core.config import ConfigError, ServicesConfig, parse_config
from routerd.core.hostenv import detect, is_container, is_wsl
from routerd.core.targets import (
    ProbeTarget,
    discovery_plan,
    is_loopback_url,
    plan_targets,
    settings_for,
)


def services(text: str = "") -> ServicesConfig:
    return parse_config(text, fmt="toml", env={}).services


def by_name(text: str = "", container_host: str | None = None) -> dict[str, ProbeTarget]:
    return {t.name: t for t in plan_targets(services(text), container_host=container_host)}


def test_defaults_probe_each_port_once_with_stable_names() -> None:
    targets = plan_targets(services())
    names = [t.name for t in targets]
    assert names == [
        "ollama", "lmstudio", "jan", "jan:6767", "openwebui", "local:8080", "local:8000",
        "llamacpp:9931", "koboldcpp", "gpt4all", "textgen",
    ]  # fmt: skip
    shared = {t.name: t for t in targets}["local:8080"]
    assert shared.candidates == ("openwebui", "localai", "llamacpp")
    assert shared.base_url == "http://127.0.0.1:8080"
    port8000 = {t.name: t for t in targets}["local:8000"]
    assert port8000.candidates == ("vllm", "llama_cpp_python")
    assert port8000.configs == ("vllm",)  # llama-cpp-python follows services.vllm
    assert len({t.base_url for t in targets}) == len(targets)


def test_a_kind_alone_on_its_port_is_named_after_it() -> None:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in ("openwebui", "localai"))
    targets = by_name(off)
    assert "llamacpp" in targets and "llamacpp:9931" in targets and "local:8080" not in targets


def test_configured_endpoint_leads_its_shared_address() -> None:
    t = by_name('[services.llamacpp]\nendpoint = "http://localhost:8080/"\npriority = 0')
    target = t["llamacpp"]
    assert target.base_url == "http://localhost:8080"
    assert target.candidates == ("llamacpp", "openwebui", "localai")
    assert target.origin == "configured" and target.priority == 0
    assert "local:8080" not in t and "llamacpp:9931" not in t
    assert next(iter(t)) == "llamacpp"  # priority 0 comes first


def test_disabled_kinds_are_not_probed() -> None:
    t = by_name("[services.ollama]\nenabled = false\n[services.vllm]\nenabled = false")
    assert "ollama" not in t and "local:8000" not in t


def test_custom_endpoints_are_their_own_targets() -> None:
    t = by_name(
        '[[services.custom_endpoints]]\nname = "gpu"\nendpoint = "http://127.0.0.1:11434"\n'
        'api_style = "ollama"\npriority = 3\n'
    )
    gpu = t["gpu"]
    assert gpu.candidates == ("custom",) and gpu.flavor == "ollama"
    assert gpu.configs == ("custom:gpu",)
    assert "ollama" in t  # the built-in one stays; grouping says they are one server
    paths = [s.path for s in discovery_plan(gpu)]
    assert paths[:2] == ["/api/version", "/"]  # the Ollama flavour's plan


def test_container_host_twins_loopback_targets_only() -> None:
    t = by_name(
        '[[services.custom_endpoints]]\nname = "far"\nendpoint = "http://10.0.0.5:8000"\n'
        '[security]\nallowed_hosts = ["localhost", "127.0.0.1", "::1", "10.0.0.5"]',
        container_host="host.docker.internal",
    )
    assert t["ollama@host"].base_url == "http://host.docker.internal:11434"
    assert t["ollama"].base_url == "http://127.0.0.1:11434"
    assert "far@host" not in t and "far" in t
    assert t["local:8080@host"].origin == "container_host"


def test_settings_follow_the_identified_kind() -> None:
    svc = services('[services.localai]\ntimeout = 5000\n[services.llamacpp]\ntimeout = 9000')
    shared = {t.name: t for t in plan_targets(svc)}["local:8080"]
    assert settings_for(svc, shared, "llamacpp").timeout == 9000
    assert settings_for(svc, shared, "localai").timeout == 5000
    assert settings_for(svc, shared, None).timeout == 30000


def test_loopback_urls() -> None:
    assert is_loopback_url("http://localhost:1") and is_loopback_url("http://[::1]:2")
    assert is_loopback_url("http://127.3.4.5:9") and not is_loopback_url("http://10.0.0.1:1")


# --- configuration of discovery ---------------------------------------------------------------


def test_discovery_defaults() -> None:
    d = parse_config("", fmt="toml", env={}).discovery
    assert (d.interval, d.probe_timeout, d.backoff_cap, d.models_refresh) == (5.0, 3.0, 60.0, 60.0)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("interval = 0", "$.discovery.interval"),
        ("probe_timeout = -1", "$.discovery.probe_timeout"),
        ("interval = 10\nbackoff_cap = 5", "$.discovery.backoff_cap"),
        ("jitter = 1.0", "$.discovery.jitter"),
        ("models_refresh = 1", "$.discovery.models_refresh"),
        ("probe_failures_to_trip = 0", "$.discovery.probe_failures_to_trip"),
        ("intervall = 3", "$.discovery.intervall"),
    ],
)
def test_discovery_settings_are_checked(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[discovery]\n{text}", fmt="toml", env={})
    assert path in str(info.value)


# --- WSL and containers -----------------------------------------------------------------------


WSL_VERSION = "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@...) #1 SMP"


def test_wsl_from_proc_version_or_env() -> None:
    assert is_wsl(WSL_VERSION, None, {}) is not None
    assert is_wsl(None, "5.15.0-microsoft-standard", {}) is not None
    assert is_wsl(None, None, {"WSL_DISTRO_NAME": "Ubuntu"}) == "$WSL_DISTRO_NAME is set"
    assert is_wsl("Linux version 6.8.0-45-generic (buildd@lcy02)", "6.8.0-45-generic", {}) is None


def test_container_markers() -> None:
    none: dict[str, str] = {}
    assert is_container(dockerenv=True, containerenv=False, cgroup=None, env=none)
    assert is_container(dockerenv=False, containerenv=True, cgroup=None, env=none)
    assert is_container(dockerenv=False, containerenv=False, cgroup=None, env={"container": "podman"})
    # The seed read the file twice in one ``or``, so kubepods was never seen: it is here.
    k8s = "12:cpu:/kubepods/besteffort/pod1234/abcd\n"
    assert "kubepods" in (is_container(dockerenv=False, containerenv=False, cgroup=k8s, env=none) or "")
    assert is_container(dockerenv=False, containerenv=False, cgroup="0::/\n", env=none) is None


def test_detect_reports_both_with_reasons() -> None:
    where = detect(
        proc_version=WSL_VERSION,
        osrelease=None,
        cgroup="0::/\n",
        dockerenv=True,
        containerenv=False,
        env={},
    )
    assert where.wsl and where.container and where.host_is_elsewhere
    assert "Microsoft" in where.reason and "/.dockerenv" in where.reason
    plain = detect(proc_version="Linux", osrelease="6.8", cgroup="0::/", dockerenv=False,
                   containerenv=False, env={})  # fmt: skip
    assert not plain.host_is_elsewhere and plain.reason == ""
