"""routerd's configuration: the schema, its defaults, and parsing of TOML and YAML text.

``docs/configuration.md`` documents every key; keep it in step with this file.

Invariants:

* Every section is a msgspec Struct with ``forbid_unknown_fields=True``: a misspelt key is an
  error naming its exact path (``$.security.alowed_hosts``), never silently ignored.
* :func:`parse_config` is pure: the environment is a mapping passed in, no file is read.
  Its result has passed :func:`~routerd.core.config_checks.validate_config`, so values are
  checked too (ranges, URLs, CIDRs, known names, cross-field rules), not only types.
* A document is laid over :func:`default_config`: mappings merge key by key, lists replace.
  So a partial ``task_routing.analysis`` keeps that category's other defaults, and an empty
  document is the defaults. A ``null`` section means "defaults".
* ``${VAR}`` expansion happens on string values before typing; expanded values stay strings
  (a number or boolean must be written literally).
* The configuration holds *references* to secrets (``api_key_env``, ``api_key_file``), never
  secrets; header values, which may hold tokens, are masked in ``repr``.
* Times: ``services.*.timeout`` is in **milliseconds** (an integer, as in the seed design);
  every ``daemon`` duration is in **seconds** (a float).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from routerd.core.catalog import ModelOverride
from routerd.core.config_checks import (
    API_STYLES,
    CONTEXT_FORMATS,
    ENVIRONMENTS,
    LOG_LEVELS,
    LOOPBACK_CIDRS,
    LOOPBACK_HOSTS,
    SERENA_PRIORITIES,
    SERVICE_KINDS,
    SUPPORTED_VERSIONS,
    TASK_CATEGORIES,
    validate_config,
)
from routerd.core.config_convert import convert_tree
from routerd.core.config_text import ConfigError, decode_document, expand_env, merge_over
from routerd.core.serena_access import READ_TOOLS, WRITE_TOOLS
from routerd_client.protocol import DEFAULT_MAX_FRAME_SIZE

__all__ = [
    "API_STYLES",
    "CONTEXT_FORMATS",
    "ENVIRONMENTS",
    "LOG_LEVELS",
    "LOOPBACK_CIDRS",
    "LOOPBACK_HOSTS",
    "SERENA_PRIORITIES",
    "SERVICE_KINDS",
    "SUPPORTED_VERSIONS",
    "TASK_CATEGORIES",
    "AgentConfig",
    "ClientRule",
    "Config",
    "ConfigError",
    "ContextConfig",
    "CustomEndpointConfig",
    "DaemonConfig",
    "DiscoveryConfig",
    "HttpConfig",
    "ConcurrencyConfig",
    "ModelChecksum",
    "ModelConfig",
    "RoutingConfig",
    "RoutingTimeoutsConfig",
    "SecurityConfig",
    "SerenaConfig",
    "SerenaWorkspaceConfig",
    "SessionsConfig",
    "ServiceConfig",
    "ServicesConfig",
    "TaskRouteConfig",
    "TaskRoutingConfig",
    "default_config",
    "parse_config",
    "redacted",
    "resolve_paths",
]

_NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
_PosInt = Annotated[int, msgspec.Meta(ge=1)]
_NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The daemon process: its socket, limits and logging. Durations in seconds."""

    socket: str | None = None  # socket path; None: the daemon's built-in default location
    socket_group: str | None = None  # group name -> mode 0660 instead of 0600
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE  # bytes; 1 KiB to 1 GiB
    max_connections: _PosInt = 256
    max_in_flight: _PosInt = 64  # requests in flight per connection
    stream_queue: _PosInt = 64  # outbound frames buffered per stream
    slow_consumer_timeout: float = 30.0  # seconds a stream may be blocked on a non-reading client
    shutdown_grace: float = 10.0  # seconds in-flight requests get on SIGTERM
    log_level: str = "info"  # debug|info|warning|error
    state_dir: str | None = None  # None: the daemon's built-in default location


class ServiceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One built-in kind of model server. ``timeout`` is in milliseconds.

    A lower ``priority`` is tried first. ``endpoint`` and ``api_style`` left as None mean the
    kind's usual addresses and API, from the service table (``routerd.core.services``).
    """

    enabled: bool = True
    endpoint: str | None = None  # base URL, http or https, no credentials, query or fragment
    priority: _NonNegInt = 1
    timeout: int = 30000  # milliseconds, 100 to 3_600_000
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    api_style: str | None = None  # one of API_STYLES
    headers: dict[str, str] = {}  # extra request headers; values masked in repr
    api_key_env: str | None = None  # name of an environment variable holding the API key
    api_key_file: str | None = None  # path of a file holding the API key

    def __repr__(self) -> str:
        masked = msgspec.structs.replace(self, headers=dict.fromkeys(self.headers, "***"))
        return msgspec.Struct.__repr__(masked)


class CustomEndpointConfig(ServiceConfig, forbid_unknown_fields=True, kw_only=True):
    """A model server at an address of your choosing (e.g. a GPU box on the local network).

    Its kind is identified by probing; ``api_style`` says which API to speak until then.
    """

    name: _NonEmptyStr
    endpoint: str
    api_style: str = "openai"


def _svc(priority: int) -> Any:
    return msgspec.field(default_factory=lambda: ServiceConfig(priority=priority))


class ServicesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ten known local model servers (probed at their usual ports), plus custom endpoints."""

    ollama: ServiceConfig = _svc(1)
    lmstudio: ServiceConfig = _svc(2)
    jan: ServiceConfig = _svc(3)
    openwebui: ServiceConfig = _svc(4)
    localai: ServiceConfig = _svc(5)
    vllm: ServiceConfig = _svc(6)
    llamacpp: ServiceConfig = _svc(7)
    koboldcpp: ServiceConfig = _svc(8)
    gpt4all: ServiceConfig = _svc(9)
    textgen: ServiceConfig = _svc(10)
    custom_endpoints: list[CustomEndpointConfig] = []

    def builtin(self) -> dict[str, ServiceConfig]:
        """The built-in services by kind, in SERVICE_KINDS order."""
        return {kind: getattr(self, kind) for kind in SERVICE_KINDS}


class TaskRouteConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which models serve one task category, in order of preference."""

    primary_models: list[str] = []
    fallback_models: list[str] = []
    min_context: _PosInt = 8192  # tokens
    require_serena: bool = False


def _route(primary: list[str], fallback: list[str], min_context: int, serena: bool) -> Any:
    return msgspec.field(
        default_factory=lambda: TaskRouteConfig(
            primary_models=list(primary),
            fallback_models=list(fallback),
            min_context=min_context,
            require_serena=serena,
        )
    )


class TaskRoutingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One route per task category (TASK_CATEGORIES); defaults are the seed design's."""

    coding: TaskRouteConfig = _route(
        ["deepseek-v3", "qwen2.5-coder-32b", "deepseek-coder-v2"],
        ["codellama-34b", "qwen2.5-coder-14b", "phi-4"],
        8192,
        False,
    )
    reasoning: TaskRouteConfig = _route(
        ["deepseek-r1", "deepseek-v3", "qwen2.5-72b-instruct"],
        ["deepseek-r1-distill-32b", "mistral-small-24b"],
        16384,
        False,
    )
    analysis: TaskRouteConfig = _route(
        ["deepseek-v3", "qwen2.5-coder-32b"],
        ["codellama-34b-instruct", "qwen2.5-72b-instruct"],
        16384,
        True,
    )
    documentation: TaskRouteConfig = _route(
        ["qwen2.5-72b-instruct", "llama-3.3-70b-instruct"],
        ["qwen2.5-32b-instruct", "mistral-nemo-12b"],
        8192,
        False,
    )

    def get(self, category: str) -> TaskRouteConfig:
        """The route for ``category``; raises KeyError for a category not in TASK_CATEGORIES."""
        if category not in TASK_CATEGORIES:
            raise KeyError(category)
        route: TaskRouteConfig = getattr(self, category)
        return route


class SerenaWorkspaceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One project root Serena is kept warm for, with who may use it and how.

    Read-only unless ``writable``; even then only ``write_uids`` (empty: the owner of the
    directory) get Serena's editing tools.
    """

    path: _NonEmptyStr
    writable: bool = False
    write_uids: list[_NonNegInt] = []  # uids allowed to edit; empty: the directory's owner
    uids: list[_NonNegInt] = []  # uids allowed to use it at all; empty: whoever can read it
    languages: list[str] = []  # Serena language keys; empty: serena.languages
    start: bool = True  # start with the daemon (else on first use)


class SerenaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The Serena MCP servers the daemon keeps warm, one per workspace. Times in seconds."""

    enabled: bool = True
    priority: str = "always_first"  # one of SERENA_PRIORITIES
    workspace: str | None = None  # project root; None: no workspace until a client names one
    # Further project roots: a path (read-only, started with the daemon) or a table.
    workspaces: list[str | SerenaWorkspaceConfig] = []
    command: list[str] = msgspec.field(default_factory=lambda: ["serena", "start-mcp-server"])
    languages: list[str] = msgspec.field(default_factory=lambda: ["python_jedi"])
    ls_settings: dict[str, dict[str, Any]] = {}  # Serena's ls_specific_settings, by language
    home: str | None = None  # routerd's Serena files; None: <state_dir>/serena
    unlisted_workspaces: bool = True  # clients may name other readable directories (read-only)
    max_running: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    idle_timeout: float = 1800.0  # stop an unlisted workspace's Serena unused this long; 0: never
    start_timeout: float = 120.0  # spawn, initialize and warm up
    call_timeout: float = 30.0  # one tool call
    ping_interval: float = 15.0
    ping_timeout: float = 5.0
    backoff_initial: float = 1.0  # first restart delay; doubles per failure
    backoff_max: float = 60.0
    context_tokens: _PosInt = 1500  # token budget of the context added to a prompt
    context_timeout: float = 3.0  # time budget for gathering it (diagnostics: 1-3 s)
    read_tools: list[str] = msgspec.field(default_factory=lambda: list(READ_TOOLS))
    write_tools: list[str] = msgspec.field(default_factory=lambda: list(WRITE_TOOLS))

    def workspace_entries(self) -> list[SerenaWorkspaceConfig]:
        """``workspace`` and ``workspaces`` as tables, in that order (plain paths read-only)."""
        entries = [SerenaWorkspaceConfig(path=self.workspace)] if self.workspace else []
        for w in self.workspaces:
            entries.append(SerenaWorkspaceConfig(path=w) if isinstance(w, str) else w)
        return entries


class ContextConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Session context compaction. Fractions are of the model's context window."""

    compaction_threshold: float = 0.8  # compact when usage exceeds this fraction, 0 < x <= 1
    compaction_target: float = 0.5  # ...down to this fraction, 0 < target < threshold
    preserve_recent_messages: _NonNegInt = 10
    preserve_recent_tool_calls: _NonNegInt = 5
    max_tool_output_tokens: _PosInt = 500


class SessionsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Stored conversations (``routerd.shell.sessions``). Durations in seconds."""

    idle_expiry: float = 7 * 86400.0  # unused this long: deleted; 0: never expire
    max_db_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 256 * 1024 * 1024
    max_sessions: _PosInt = 1000  # beyond this, the least recently used are deleted
    summary_model: str | None = None  # a small local model writing compaction summaries
    exact_tokenize: bool = True  # near a window's edge, ask llama.cpp servers for exact counts


class ClientRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which methods one client may call. Give exactly one of ``uid``, ``user``, ``group``.

    ``methods`` are shell-style patterns (``status``, ``audit.*``); a peer matched by several
    rules may call what any of them allows (see ``routerd.core.access``).
    """

    uid: _NonNegInt | None = None
    user: str | None = None
    group: str | None = None
    methods: list[str] = []


class ModelChecksum(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A local model file (a GGUF) and the SHA-256 it must have."""

    path: _NonEmptyStr
    sha256: str  # 64 hex digits
    model: str | None = None  # the model id its server reports; blocked from routing on mismatch


class SecurityConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Air-gap enforcement and auditing. Defaults allow loopback only.

    See docs/security.md for what each setting enforces.
    """

    allow_external: bool = False
    allowed_hosts: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_HOSTS))
    allowed_cidrs: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_CIDRS))
    audit_enabled: bool = True
    audit_log_path: str | None = None  # None: audit.log in the daemon's state directory
    log_queries: bool = True  # the query's keyed hash (HMAC-SHA-256), never its text
    log_query_text: bool = False  # also the query's plaintext: only where policy allows it
    log_responses: bool = False  # the response's keyed hash
    audit_queue: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000  # records
    audit_queue_full: str = "block"  # block|drop: what a full audit queue does to a request
    audit_max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 16 * 1024 * 1024  # per file
    audit_backups: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10  # rotated files kept
    allowed_uids: list[_NonNegInt] = []  # admitted besides the daemon's own uid and root
    allowed_groups: list[str] = []  # names or gids; [] means daemon.socket_group, if set
    clients: list[ClientRule] = []  # per-client method capabilities
    verify_checksums: bool = True
    model_checksums: list[ModelChecksum] = []  # GGUF files and their SHA-256
    ollama_models: str | None = None  # Ollama's model store; None: $OLLAMA_MODELS or the usual


class DiscoveryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How model servers are probed and when they count as down. Times in seconds.

    The fields after ``container_host`` are those of ``routerd.core.health.HealthPolicy``.
    """

    interval: float = 5.0  # between probes of a server that answers
    probe_timeout: float = 3.0  # each probe request's own limit
    backoff_cap: float = 60.0  # longest wait between probes of a server that is down
    jitter: float = 0.2  # fraction of a backoff delay taken off at random, 0 <= x < 1
    models_refresh: float = 60.0  # full model re-discovery of a server that stays up
    subscriber_queue: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256  # events per watcher
    container_host: bool = True  # in WSL or a container, also probe host.docker.internal
    probe_failures_to_trip: _PosInt = 3
    request_failures_to_trip: _PosInt = 5
    cooldown: float = 30.0  # a degraded server's rest before one trial request
    slow_request: float | None = 120.0  # first byte later than this counts against a server


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Preferences for one coding agent (keyed by the agent's name). None: no preference."""

    default_model_preference: str | None = None  # a model family to prefer, e.g. "qwen"
    preferred_models: list[str] = []  # models to try first for this agent, best first
    context_format: str | None = None  # one of CONTEXT_FORMATS
    supports_streaming: bool | None = None


class RoutingTimeoutsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The time limits of one routed request, in seconds (see ``routerd.core.fallback``)."""

    connect: float = 5.0  # to open a connection to a model server
    first_token: float = 120.0  # from sending to the first byte; generous: a model load is slow
    idle: float = 60.0  # between two chunks of a streamed answer
    overall: float = 300.0  # from the request's arrival to the first byte, across fallbacks


class ConcurrencyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Requests routerd runs at once on one service. None: the server's own figure (llama.cpp's
    slots) or the kind's default (1 for Ollama, as its ``OLLAMA_NUM_PARALLEL``)."""

    per_model: _PosInt | None = None  # requests at once per model on this service
    total: _PosInt | None = None  # requests at once across all models on this service
    models: dict[str, _PosInt] = {}  # per model id as the service reports it


class RoutingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How a model is chosen and a request is queued, timed and retried elsewhere."""

    default_category: str = "coding"  # one of TASK_CATEGORIES; used when confidence is low
    min_confidence: float = 0.4  # classifications less sure than this use default_category
    quality_tolerance: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5  # score points
    swap_wait: float = 10.0  # seconds a request needing a model swap may be held back
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=32)] = 6  # models tried per request
    reserve_for_answer: _NonNegInt = 2048  # tokens of the window kept free for the answer
    keep_alive: int | str | None = None  # Ollama: seconds, or a duration such as "30m"
    round_robin: bool = True  # share a model fairly between connections, not only FIFO
    timeouts: RoutingTimeoutsConfig = msgspec.field(default_factory=RoutingTimeoutsConfig)
    concurrency: dict[str, ConcurrencyConfig] = {}  # per service name


def _default_agents() -> dict[str, AgentConfig]:
    return {
        "qwen-cli": AgentConfig(default_model_preference="qwen", context_format="qwen"),
        "aider": AgentConfig(default_model_preference="gpt", context_format="openai"),
        "cursor": AgentConfig(default_model_preference="claude", context_format="anthropic"),
        "continue": AgentConfig(supports_streaming=True, context_format="openai"),
    }


#: A user addition to, or override of, the model database: the catalog's own type, so there
#: is one definition of what an entry may say (``routerd.core.catalog.ModelOverride``).
ModelConfig = ModelOverride


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The HTTP fronts: OpenAI- and Ollama-compatible APIs over loopback TCP and/or a Unix
    socket (docs/configuration.md, "http"). Off by default. ``enabled``, ``listen`` and
    ``unix_socket`` take effect at start; the rest on every reload."""

    enabled: bool = False
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:11500"])  # host:port
    unix_socket: str | None = None  # path of an HTTP Unix socket (0600, or 0660 with a group)
    openai: bool = True  # /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
    ollama: bool = True  # /api/tags, /api/show, /api/chat, /api/generate, /api/embed, ...
    metrics: bool = True  # GET /metrics (Prometheus)
    token_file: str | None = None  # bearer tokens, one a line; None: <state_dir>/http-tokens
    require_token: bool = True  # on TCP; the Unix socket is guarded by its file mode
    allowed_hosts: list[str] = []  # Host header names accepted besides loopback and listen
    allowed_origins: list[str] = []  # browser origins (scheme://host[:port]) accepted
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 32 * 1024 * 1024


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration. Build one with :func:`parse_config` or :func:`default_config`."""

    version: str = "1.0"
    environment: str = "air-gapped"  # one of ENVIRONMENTS
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    services: ServicesConfig = msgspec.field(default_factory=ServicesConfig)
    task_routing: TaskRoutingConfig = msgspec.field(default_factory=TaskRoutingConfig)
    serena: SerenaConfig = msgspec.field(default_factory=SerenaConfig)
    context: ContextConfig = msgspec.field(default_factory=ContextConfig)
    sessions: SessionsConfig = msgspec.field(default_factory=SessionsConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    discovery: DiscoveryConfig = msgspec.field(default_factory=DiscoveryConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    agents: dict[str, AgentConfig] = msgspec.field(default_factory=_default_agents)
    models: list[ModelOverride] = []  # applied in order with Catalog.merge
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)


def default_config() -> Config:
    """The configuration used when no file is given (a fresh, independent object)."""
    return Config()


def parse_config(
    text: str,
    *,
    fmt: Literal["toml", "yaml"],
    env: Mapping[str, str],
    source: str = "<string>",
) -> Config:
    """Parse and validate configuration text.

    ``env`` supplies ``${VAR}`` values; ``source`` names the text in error messages.
    Raises :class:`ConfigError` for a syntax error, an unknown key, a value of the wrong type
    or out of range, or an unset variable, with the exact path of the problem.
    """
    tree = decode_document(text, fmt, source)
    tree = expand_env(tree, env, source=source)
    version = tree.get("version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        raise ConfigError(
            f'must be a string: write version = "{version}" with quotes',
            source=source,
            path="$.version",
        )
    merged = merge_over(msgspec.to_builtins(default_config()), tree)
    config = convert_tree(merged, Config, source=source)
    validate_config(config, source=source)
    return config


def resolve_paths(config: Config, base_dir: str, *, home: str | None = None) -> Config:
    """Make the configuration's file paths absolute.

    Relative paths are taken relative to ``base_dir`` (the directory of the configuration
    file); a leading ``~/`` is replaced by ``home`` when given. Applies to ``daemon.socket``,
    ``daemon.state_dir``, ``security.audit_log_path``, ``security.ollama_models``,
    ``security.model_checksums[].path``, ``serena.workspace``,
    ``serena.workspaces`` (paths and tables' ``path``), ``serena.home``, ``http.unix_socket``,
    ``http.token_file`` and every ``api_key_file``. Returns a new Config.
    """

    def fix(p: str) -> str:
        if home is not None and (p == "~" or p.startswith("~/")):
            p = home + p[1:]
        return posixpath.normpath(posixpath.join(base_dir, p))

    def opt(p: str | None) -> str | None:
        return None if p is None else fix(p)

    def svc(s: Any) -> Any:
        return msgspec.structs.replace(s, api_key_file=opt(s.api_key_file))

    services = msgspec.structs.replace(
        config.services,
        **{kind: svc(cfg) for kind, cfg in config.services.builtin().items()},
        custom_endpoints=[svc(c) for c in config.services.custom_endpoints],
    )
    return msgspec.structs.replace(
        config,
        daemon=msgspec.structs.replace(
            config.daemon, socket=opt(config.daemon.socket), state_dir=opt(config.daemon.state_dir)
        ),
        security=msgspec.structs.replace(
            config.security,
            audit_log_path=opt(config.security.audit_log_path),
            ollama_models=opt(config.security.ollama_models),
            model_checksums=[
                msgspec.structs.replace(m, path=fix(m.path))
                for m in config.security.model_checksums
            ],
        ),
        serena=msgspec.structs.replace(
            config.serena,
            workspace=opt(config.serena.workspace),
            workspaces=[
                fix(w) if isinstance(w, str) else msgspec.structs.replace(w, path=fix(w.path))
                for w in config.serena.workspaces
            ],
            home=opt(config.serena.home),
        ),
        services=services,
        http=msgspec.structs.replace(
            config.http,
            unix_socket=opt(config.http.unix_socket),
            token_file=opt(config.http.token_file),
        ),
    )


def redacted(config: Config) -> dict[str, Any]:
    """The configuration as plain data for display, with every header value masked."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    services = data["services"]
    for entry in [*(services[k] for k in SERVICE_KINDS), *services["custom_endpoints"]]:
        entry["headers"] = dict.fromkeys(entry["headers"], "***")
    return data
