"""routerd.core.config: schema, defaults, ${VAR} expansion, and exact error paths."""

from __future__ import annotations

import copy
import pathlib
from typing import Literal

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.catalog import ModelOverride
from routerd.core.config import (
    LOOPBACK_HOSTS,
    SERVICE_KINDS,
    Config,
    ConfigError,
    CustomEndpointConfig,
    DaemonConfig,
    ServiceConfig,
    default_config,
    parse_config,
    redacted,
    resolve_paths,
)
from routerd.core.config_text import expand_string, format_path, quote_env

DATA = pathlib.Path(__file__).parents[1] / "data"
SEED_ENV = {"WORKSPACE_ROOT": "/srv/project"}


def yaml_cfg(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, fmt="yaml", env=env or {}, source="test.yaml")


def toml_cfg(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, fmt="toml", env=env or {}, source="test.toml")


def error_of(
    text: str, fmt: Literal["toml", "yaml"] = "yaml", env: dict[str, str] | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, fmt=fmt, env=env or {}, source=f"test.{fmt}")
    return info.value


# --- the seed's example ---------------------------------------------------------------------------


def test_seed_yaml_loads_verbatim() -> None:
    text = (DATA / "seed-config.yaml").read_text(encoding="utf-8")
    assert text.startswith("# local-llm-router.yaml\n")
    cfg = parse_config(text, fmt="yaml", env=SEED_ENV, source="seed-config.yaml")

    assert cfg.version == "1.0"
    assert cfg.environment == "air-gapped"
    assert cfg.services.ollama.timeout == 30000
    assert cfg.services.ollama.endpoint == "http://localhost:11434"
    assert cfg.services.lmstudio.priority == 2
    assert cfg.services.jan.enabled is False
    (gpu,) = cfg.services.custom_endpoints
    assert (gpu.name, gpu.endpoint, gpu.priority, gpu.api_style) == (
        "internal-gpu-server",
        "http://192.168.1.100:8000",
        0,
        "openai",
    )
    assert cfg.task_routing.coding.primary_models == [
        "deepseek-v3",
        "qwen2.5-coder-32b",
        "deepseek-coder-v2",
    ]
    assert cfg.task_routing.reasoning.min_context == 16384
    assert cfg.task_routing.analysis.require_serena is True
    assert cfg.task_routing.documentation.fallback_models == ["mistral-nemo-12b"]
    assert cfg.serena.workspace == "/srv/project"
    assert cfg.serena.priority == "always_first"
    assert cfg.context.compaction_threshold == 0.8
    assert cfg.security.allowed_hosts == ["localhost", "127.0.0.1", "192.168.0.0/16"]
    assert cfg.security.audit_log_path == "./llm-router-audit.log"


def test_seed_toml_equivalent_loads_to_the_same_config() -> None:
    from_yaml = parse_config(
        (DATA / "seed-config.yaml").read_text(encoding="utf-8"), fmt="yaml", env=SEED_ENV
    )
    from_toml = parse_config(
        (DATA / "seed-config.toml").read_text(encoding="utf-8"), fmt="toml", env=SEED_ENV
    )
    assert from_toml == from_yaml


def test_seed_yaml_without_workspace_root_names_variable_and_path() -> None:
    err = error_of((DATA / "seed-config.yaml").read_text(encoding="utf-8"))
    assert err.path == "$.serena.workspace"
    assert "WORKSPACE_ROOT" in err.message


# --- defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("", "yaml"), ("", "toml"), ("null\n", "yaml"), ("# nothing\n", "yaml"), ("# x\n", "toml")],
)
def test_empty_document_is_the_defaults(text: str, fmt: Literal["toml", "yaml"]) -> None:
    assert parse_config(text, fmt=fmt, env={}) == default_config()


def test_defaults_are_loopback_only_and_as_documented() -> None:
    cfg = default_config()
    assert cfg.security.allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    assert cfg.security.allowed_cidrs == ["127.0.0.0/8", "::1/128"]
    assert cfg.security.allow_external is False
    assert cfg.daemon == DaemonConfig()
    assert cfg.daemon.max_frame_size == 16 * 1024 * 1024
    assert (cfg.daemon.max_connections, cfg.daemon.max_in_flight, cfg.daemon.stream_queue) == (
        256,
        64,
        64,
    )
    assert cfg.daemon.log_level == "info"
    assert list(cfg.services.builtin()) == list(SERVICE_KINDS)
    assert [s.priority for s in cfg.services.builtin().values()] == list(range(1, 11))
    assert all(s.endpoint is None for s in cfg.services.builtin().values())
    assert all(s.api_style is None for s in cfg.services.builtin().values())
    assert cfg.services.ollama.timeout == 30000
    assert cfg.task_routing.analysis.require_serena is True
    assert cfg.agents["aider"].context_format == "openai"
    assert cfg.models == []


def test_default_config_objects_are_independent() -> None:
    a = default_config()
    a.security.allowed_hosts.append("example.lan")
    assert default_config().security.allowed_hosts == list(LOOPBACK_HOSTS)


def test_defaults_survive_a_round_trip_through_yaml() -> None:
    text = yaml.safe_dump(msgspec.to_builtins(default_config()))
    assert yaml_cfg(text) == default_config()


def test_partial_service_keeps_its_other_defaults() -> None:
    cfg = toml_cfg("[services.vllm]\nendpoint = 'http://127.0.0.1:8001'\n")
    assert cfg.services.vllm.endpoint == "http://127.0.0.1:8001"
    assert cfg.services.vllm.enabled is True
    assert cfg.services.vllm.priority == 6
    assert cfg.services.vllm.timeout == 30000


def test_partial_task_route_keeps_category_defaults() -> None:
    cfg = yaml_cfg("task_routing:\n  analysis:\n    primary_models: [m1]\n")
    assert cfg.task_routing.analysis.primary_models == ["m1"]
    assert cfg.task_routing.analysis.min_context == 16384
    assert cfg.task_routing.analysis.require_serena is True


def test_null_sections_mean_defaults_and_null_optionals_are_none() -> None:
    cfg = yaml_cfg("serena: null\nsecurity:\ndaemon:\n  socket: null\n  state_dir: ~\n")
    assert cfg == default_config()


def test_lists_replace_defaults() -> None:
    cfg = yaml_cfg("security:\n  allowed_hosts: [gpu.lan]\n")
    assert cfg.security.allowed_hosts == ["gpu.lan"]


def test_agents_merge_over_defaults() -> None:
    cfg = yaml_cfg(
        "agents:\n  aider:\n    supports_streaming: false\n  zed: {context_format: qwen}\n"
    )
    assert cfg.agents["aider"].context_format == "openai"
    assert cfg.agents["aider"].supports_streaming is False
    assert cfg.agents["zed"].context_format == "qwen"
    assert "cursor" in cfg.agents


def test_models_section_holds_catalog_overrides() -> None:
    cfg = yaml_cfg(
        "models:\n"
        "  - id: my-coder\n    family: qwen\n    params_b: 7.5\n    context_length: 32768\n"
        "    aliases: [mc]\n    scores: {coding: 90}\n"
        "  - id: qwen2.5-coder-32b\n    tier: 1\n"
    )
    mine, changed = cfg.models
    assert isinstance(mine, ModelOverride)
    assert (mine.id, mine.family, mine.params_b, mine.context_length, mine.aliases) == (
        "my-coder",
        "qwen",
        7.5,
        32768,
        ("mc",),
    )
    assert mine.scores is not None and mine.scores.coding == 90 and mine.scores.analysis is None
    assert (changed.id, changed.tier, changed.family) == ("qwen2.5-coder-32b", 1, None)


# --- error paths --------------------------------------------------------------------------------

ERRORS: list[tuple[str, str, str, str]] = [
    # (format, text, exact path, a fragment of the message)
    ("yaml", "bogus: 1\n", "$.bogus", "unknown key 'bogus'"),
    ("toml", "[daemon]\nsockt = 'x'\n", "$.daemon.sockt", "did you mean 'socket'"),
    ("yaml", "services:\n  ollama:\n    endpoitn: x\n", "$.services.ollama.endpoitn", "endpoint"),
    (
        "toml",
        "[[services.custom_endpoints]]\nname='a'\nendpoint='http://a'\n"
        "[[services.custom_endpoints]]\nname='b'\nendpoint='http://b'\nfoo=1\n",
        "$.services.custom_endpoints[1].foo",
        "unknown key",
    ),
    ("yaml", "agents:\n  aider:\n    colour: red\n", "$.agents.aider.colour", "unknown key"),
    ("yaml", "agents:\n  ok: {}\n  my agent:\n    x: 1\n", '$.agents["my agent"].x', "unknown"),
    (
        "yaml",
        "task_routing:\n  coding:\n    min_ctx: 1\n",
        "$.task_routing.coding.min_ctx",
        "min_context",
    ),
    ("yaml", "task_routing:\n  planning: {}\n", "$.task_routing.planning", "unknown key"),
    ("yaml", "models:\n  - id: a\n    colour: red\n", "$.models[0].colour", "unknown key"),
    ("yaml", "daemon:\n  max_connections: ten\n", "$.daemon.max_connections", "expected int"),
    ("yaml", "services:\n  jan:\n    enabled: 'yes'\n", "$.services.jan.enabled", "expected bool"),
    ("toml", "daemon = 3\n", "$.daemon", "expected mapping, got int"),
    (
        "yaml",
        "security:\n  allowed_hosts: localhost\n",
        "$.security.allowed_hosts",
        "expected list",
    ),
    ("yaml", "agents:\n  x:\n    supports_streaming: 2\n", "$.agents.x.supports_streaming", "bool"),
    ("yaml", "agents:\n  1: {}\n", "$.agents", "keys must be strings"),
    (
        "toml",
        "[[services.custom_endpoints]]\nendpoint='http://a'\n",
        "$.services.custom_endpoints[0].name",
        "required",
    ),
    ("toml", "[daemon]\nmax_connections = 0\n", "$.daemon.max_connections", ">= 1"),
    ("toml", "[daemon]\nmax_frame_size = 1023\n", "$.daemon.max_frame_size", "1 KiB"),
    ("toml", "[daemon]\nmax_frame_size = 1073741825\n", "$.daemon.max_frame_size", "1 GiB"),
    (
        "toml",
        "[daemon]\nlog_level = 'verbose'\n",
        "$.daemon.log_level",
        "debug, info, warning, error",
    ),
    ("toml", "[daemon]\nslow_consumer_timeout = 0\n", "$.daemon.slow_consumer_timeout", "positive"),
    ("toml", "[daemon]\nshutdown_grace = -1.0\n", "$.daemon.shutdown_grace", "seconds"),
    ("toml", "[daemon]\nsocket = '" + "/s" * 60 + "'\n", "$.daemon.socket", "107 bytes"),
    ("toml", "[daemon]\nsocket_group = 'bad group'\n", "$.daemon.socket_group", "group"),
    (
        "yaml",
        "security:\n  allowed_hosts: [localhost, 127.0.0.1, 192.168.1.0/16]\n",
        "$.security.allowed_hosts[2]",
        "did you mean '192.168.0.0/16'",
    ),
    (
        "yaml",
        "security:\n  allowed_hosts: [a, 10.0.0.0/33]\n",
        "$.security.allowed_hosts[1]",
        "CIDR",
    ),
    ("yaml", "security:\n  allowed_hosts: ['-bad-']\n", "$.security.allowed_hosts[0]", "host"),
    ("yaml", "security:\n  allowed_hosts: [999.1.1.1]\n", "$.security.allowed_hosts[0]", "IPv4"),
    (
        "yaml",
        "security:\n  allowed_cidrs: [10.0.0.0/8, lan]\n",
        "$.security.allowed_cidrs[1]",
        "CIDR",
    ),
    (
        "yaml",
        "services:\n  vllm:\n    endpoint: ftp://x\n",
        "$.services.vllm.endpoint",
        "http or https",
    ),
    ("yaml", "services:\n  vllm:\n    endpoint: http://\n", "$.services.vllm.endpoint", "no host"),
    (
        "yaml",
        "services:\n  vllm:\n    endpoint: localhost:8000\n",
        "$.services.vllm.endpoint",
        "scheme",
    ),
    (
        "yaml",
        "services:\n  vllm:\n    endpoint: http://u:p@h\n",
        "$.services.vllm.endpoint",
        "credentials",
    ),
    (
        "yaml",
        "services:\n  vllm:\n    endpoint: http://h:99999\n",
        "$.services.vllm.endpoint",
        "port",
    ),
    (
        "yaml",
        "services:\n  vllm:\n    endpoint: http://h/?a=1\n",
        "$.services.vllm.endpoint",
        "query",
    ),
    (
        "yaml",
        "services:\n  vllm:\n    api_style: grpc\n",
        "$.services.vllm.api_style",
        "openai, ollama",
    ),
    (
        "yaml",
        "services:\n  ollama:\n    timeout: 30\n",
        "$.services.ollama.timeout",
        "milliseconds",
    ),
    ("yaml", "services:\n  jan:\n    priority: -1\n", "$.services.jan.priority", ">= 0"),
    (
        "yaml",
        "services:\n  openwebui:\n    api_key_env: K\n    api_key_file: /k\n",
        "$.services.openwebui.api_key_file",
        "not both",
    ),
    (
        "yaml",
        "services:\n  openwebui:\n    api_key_env: 1BAD\n",
        "$.services.openwebui.api_key_env",
        "name",
    ),
    (
        "yaml",
        "services:\n  lmstudio:\n    headers: {'X Bad': v}\n",
        '$.services.lmstudio.headers["X Bad"]',
        "header name",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: a, endpoint: 'http://a'}\n"
        "    - {name: a, endpoint: 'http://b'}\n",
        "$.services.custom_endpoints[1].name",
        "duplicate name 'a'",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: ollama, endpoint: 'http://a'}\n",
        "$.services.custom_endpoints[0].name",
        "built-in",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: a, endpoint: 'http://a', api_style: native}\n",
        "$.services.custom_endpoints[0].api_style",
        "use 'ollama' for Ollama's /api/chat",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: a, endpoint: 'http://a', kind: vllm}\n",
        "$.services.custom_endpoints[0].kind",
        "unknown key",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: a, endpoint: null}\n",
        "$.services.custom_endpoints[0].endpoint",
        "expected str, got null",
    ),
    (
        "yaml",
        "services:\n  custom_endpoints:\n    - {name: a, endpoint: 'http://a', api_style: null}\n",
        "$.services.custom_endpoints[0].api_style",
        "expected str, got null",
    ),
    ("yaml", "context:\n  compaction_threshold: 1.5\n", "$.context.compaction_threshold", "<= 1"),
    ("yaml", "context:\n  compaction_threshold: 0\n", "$.context.compaction_threshold", "> 0"),
    ("yaml", "context:\n  compaction_target: 0.8\n", "$.context.compaction_target", "below"),
    ("yaml", "serena:\n  priority: sometimes\n", "$.serena.priority", "always_first"),
    ("yaml", "serena:\n  command: []\n", "$.serena.command", "program"),
    (
        "yaml",
        "agents:\n  aider:\n    context_format: xml\n",
        "$.agents.aider.context_format",
        "openai",
    ),
    (
        "yaml",
        "models:\n  - {id: a, scores: {coding: 150}}\n",
        "$.models[0].scores.coding",
        "<= 100",
    ),
    ("yaml", "models:\n  - {id: a, scores: {chat: 5}}\n", "$.models[0].scores.chat", "coding"),
    ("yaml", "models:\n  - {id: a, params_b: 0}\n", "$.models[0].params_b", "> 0"),
    ("yaml", "models:\n  - {id: My Model}\n", "$.models[0].id", "regex"),
    ("yaml", "models:\n  - {id: a, tier: 4}\n", "$.models[0].tier", "<= 3"),
    ("yaml", "version: 1.0\n", "$.version", 'version = "1.0"'),
    ("yaml", "version: '2.0'\n", "$.version", "'2.0' is not one of"),
    ("yaml", "environment: cloud\n", "$.environment", "air-gapped, connected"),
    ("yaml", "security:\n  allow_external: true\n", "$.security.allow_external", "air-gapped"),
    ("yaml", "- a\n- b\n", "$", "top level must be a mapping"),
    ("yaml", "serena:\n  workspace: ${NOPE}\n", "$.serena.workspace", "NOPE is not set"),
    ("yaml", "models:\n  - id: ${MODEL}\n", "$.models[0].id", "MODEL is not set"),
    ("toml", "[serena]\nworkspace = '${OPEN'\n", "$.serena.workspace", "unterminated"),
    ("toml", "[serena]\nworkspace = '${1X}'\n", "$.serena.workspace", "invalid variable"),
]


@pytest.mark.parametrize(("fmt", "text", "path", "fragment"), ERRORS)
def test_error_names_exact_path(
    fmt: Literal["toml", "yaml"], text: str, path: str, fragment: str
) -> None:
    err = error_of(text, fmt)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)
    assert str(err) == f"test.{fmt}: {path}: {err.message}"
    assert "\n" not in str(err)


def test_first_bad_entry_of_a_mapping_is_the_one_reported() -> None:
    err = error_of("agents:\n  a: {context_format: 1}\n  b: {bogus: 1}\n")
    assert err.path == "$.agents.a.context_format"
    err = error_of("agents:\n  a: {}\n  b: {bogus: 1}\n")
    assert err.path == "$.agents.b.bogus"


def test_syntax_errors_name_the_line_and_have_no_path() -> None:
    err = error_of("services: [1\n")
    assert err.path is None
    assert "line" in err.message
    assert str(err).startswith("test.yaml: YAML error")
    err = error_of("[daemon\n", "toml")
    assert err.path is None
    assert str(err).startswith("test.toml: TOML syntax error")


def test_duplicate_yaml_key_is_an_error() -> None:
    err = error_of("services:\n  ollama: {enabled: true}\n  ollama: {enabled: false}\n")
    assert "duplicate key 'ollama'" in err.message
    assert "line 3" in err.message


def test_connected_environment_may_allow_external() -> None:
    cfg = yaml_cfg("environment: connected\nsecurity: {allow_external: true}\n")
    assert cfg.security.allow_external is True


@pytest.mark.parametrize("size", [1024, 1024**3])
def test_frame_size_bounds_are_inclusive(size: int) -> None:
    assert toml_cfg(f"[daemon]\nmax_frame_size = {size}\n").daemon.max_frame_size == size


@pytest.mark.parametrize(
    "host", ["gpu-box", "gpu.lan.", "10.1.2.3", "fe80::1", "::1", "10.0.0.0/8", "fd00::/8", "a_b"]
)
def test_valid_allowed_hosts(host: str) -> None:
    assert yaml_cfg(f"security:\n  allowed_hosts: ['{host}']\n").security.allowed_hosts == [host]


@pytest.mark.parametrize(
    "url", ["http://localhost:11434", "https://gpu.lan/v1", "http://[::1]:8080", "http://10.0.0.5"]
)
def test_valid_endpoints(url: str) -> None:
    # Endpoints must also pass the egress allowlist (tests/core/test_security_config.py).
    allow = "security:\n  allowed_hosts: [localhost, '::1', gpu.lan, 10.0.0.0/8]\n"
    cfg = yaml_cfg(f"services:\n  vllm:\n    endpoint: '{url}'\n" + allow)
    assert cfg.services.vllm.endpoint == url


def test_custom_endpoint_full() -> None:
    cfg = yaml_cfg(
        "environment: connected\n"
        "services:\n  custom_endpoints:\n"
        "    - name: gpu-ollama\n      endpoint: http://10.0.0.5:11434\n"
        "      api_style: ollama\n      priority: 0\n      timeout: 120000\n"
        "      headers: {X-Team: infra}\n      api_key_env: GPU_KEY\n"
        "security:\n  allowed_cidrs: [10.0.0.0/24]\n"
    )
    (ep,) = cfg.services.custom_endpoints
    assert isinstance(ep, CustomEndpointConfig)
    assert (ep.name, ep.api_style, ep.timeout, ep.headers, ep.api_key_env) == (
        "gpu-ollama",
        "ollama",
        120000,
        {"X-Team": "infra"},
        "GPU_KEY",
    )


# --- ${VAR} expansion --------------------------------------------------------------------------


def test_expansion_default_and_escape() -> None:
    env = {"A": "alpha", "EMPTY": ""}
    cfg = yaml_cfg(
        "serena:\n  workspaces:\n"
        "    - ${A}/x\n    - ${MISSING:-/fallback}\n    - ${EMPTY:-/when-empty}\n"
        "    - /p$${A}\n    - /cost$5\n    - /a${EMPTY}b\n",
        env,
    )
    assert cfg.serena.workspaces == [
        "alpha/x",
        "/fallback",
        "/when-empty",
        "/p${A}",
        "/cost$5",
        "/ab",
    ]


def test_expansion_applies_to_values_not_keys() -> None:
    cfg = yaml_cfg("agents:\n  ${A}:\n    default_model_preference: ${A}\n", {"A": "qwen"})
    assert cfg.agents["${A}"].default_model_preference == "qwen"
    assert "qwen" not in cfg.agents


def test_expanded_values_stay_strings() -> None:
    err = error_of("daemon:\n  max_connections: ${N}\n", env={"N": "10"})
    assert err.path == "$.daemon.max_connections"
    assert "expected int, got str" in err.message


def test_expansion_reaches_nested_lists_and_headers() -> None:
    cfg = yaml_cfg(
        "services:\n  lmstudio:\n    headers: {X-Tok: '${T}'}\n"
        "task_routing:\n  coding:\n    primary_models: ['${M}']\n",
        {"T": "t0k", "M": "qwen"},
    )
    assert cfg.services.lmstudio.headers == {"X-Tok": "t0k"}
    assert cfg.task_routing.coding.primary_models == ["qwen"]


@given(st.text().filter(lambda s: "$" not in s))
def test_expansion_is_identity_without_dollar(text: str) -> None:
    assert expand_string(text, {}, source="s", path=()) == text


@given(st.text(alphabet="${}:-_aZ9 "))
def test_quote_env_round_trips(text: str) -> None:
    assert expand_string(quote_env(text), {}, source="s", path=()) == text


@given(
    st.text(alphabet="${}:-_aZ9 "),
    st.dictionaries(st.sampled_from(["a", "Z", "a_", "_9"]), st.text(max_size=3)),
)
def test_expansion_raises_only_config_errors(text: str, env: dict[str, str]) -> None:
    try:
        out = expand_string(text, env, source="s", path=("x",))
    except ConfigError as err:
        assert err.path == "$.x"
    else:
        assert isinstance(out, str)


# --- secrets, paths -----------------------------------------------------------------------------


def test_header_values_are_masked_in_repr_and_redacted() -> None:
    cfg = yaml_cfg(
        "services:\n  vllm:\n    headers: {Authorization: Bearer s3cret}\n"
        "  custom_endpoints:\n    - {name: g, endpoint: 'http://127.0.0.1:1', headers: {X-Key: s3cret}}\n"
    )
    assert "s3cret" not in repr(cfg)
    assert "s3cret" not in repr(cfg.services.vllm)
    shown = redacted(cfg)
    assert shown["services"]["vllm"]["headers"] == {"Authorization": "***"}
    assert shown["services"]["custom_endpoints"][0]["headers"] == {"X-Key": "***"}
    assert "s3cret" not in repr(shown)
    assert cfg.services.vllm.headers == {"Authorization": "Bearer s3cret"}


def test_resolve_paths() -> None:
    cfg = yaml_cfg(
        "daemon: {socket: run/r.sock, state_dir: ~/state}\n"
        "security: {audit_log_path: ./audit.log}\n"
        "serena: {workspace: /abs/ws, workspaces: [../other]}\n"
        "services:\n  openwebui: {api_key_file: keys/owui}\n"
        "  custom_endpoints:\n    - {name: g, endpoint: 'http://127.0.0.1:1', api_key_file: k}\n"
    )
    out = resolve_paths(cfg, "/etc/routerd", home="/home/u")
    assert out.daemon.socket == "/etc/routerd/run/r.sock"
    assert out.daemon.state_dir == "/home/u/state"
    assert out.security.audit_log_path == "/etc/routerd/audit.log"
    assert out.serena.workspace == "/abs/ws"
    assert out.serena.workspaces == ["/etc/other"]
    assert out.services.openwebui.api_key_file == "/etc/routerd/keys/owui"
    assert out.services.custom_endpoints[0].api_key_file == "/etc/routerd/k"
    assert out.services.vllm.api_key_file is None
    assert cfg.daemon.socket == "run/r.sock"  # the input is not changed


def test_custom_endpoint_requires_name_and_endpoint_in_code_too() -> None:
    assert ServiceConfig().endpoint is None
    with pytest.raises(TypeError):
        CustomEndpointConfig(name="x")  # type: ignore[call-arg]
    assert CustomEndpointConfig(name="x", endpoint="http://h").api_style == "openai"


# --- robustness: any change to a valid document is either accepted or located exactly ----------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(tree: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.extend(_paths(v, (*prefix, i)))
    return out


_DEFAULT_TREE = msgspec.to_builtins(default_config())
#: Errors that a change elsewhere can cause (rules between fields).
_CROSS_FIELD = {"$.context.compaction_target", "$.security.allow_external"}


@given(st.sampled_from(_paths(_DEFAULT_TREE)), _VALUES)
def test_a_changed_value_is_accepted_or_reported_at_its_path(
    path: tuple[object, ...], value: object
) -> None:
    tree = copy.deepcopy(_DEFAULT_TREE)
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    text = yaml.safe_dump(tree)
    try:
        yaml_cfg(text)
    except ConfigError as err:
        assert err.path is not None, str(err)
        assert err.path.startswith(format_path(path)) or err.path in _CROSS_FIELD, (
            str(err),
            format_path(path),
        )
