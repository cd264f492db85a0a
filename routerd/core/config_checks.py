"""Value checks for a typed configuration, and the closed sets of names it may use.

Types and simple ranges are enforced by the schema in ``routerd.core.config``; this module
checks what a type cannot say: URLs, hosts and CIDRs, names from closed sets, uniqueness, and
rules between fields (``compaction_target < compaction_threshold``; an air-gapped environment
cannot allow external hosts).

Invariants:

* :func:`validate_config` returns ``None`` or raises ``ConfigError`` for the *first* problem,
  in document order, with the exact path of the offending value.
* It is pure: no name resolution, no file or environment access.
* Every configured endpoint must pass the egress policy (``routerd.core.egress``) as far as
  can be told without DNS: a literal IP must lie in an allowed network and a host name must be
  listed in ``security.allowed_hosts``. Where a listed name resolves is checked at first use,
  by the egress transport. This check runs after the ``security`` section is validated, so an
  endpoint is reported after a bad ``allowed_hosts`` entry even though it comes first.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NoReturn
from urllib.parse import urlsplit

from routerd.core.catalog import CATEGORIES
from routerd.core.config_text import ConfigError, DocPath, format_path
from routerd.core.egress import check_url, literal_address, policy_from_config
from routerd.core.fronts.guard import http_problem
from routerd.core.serena_access import NEVER_TOOLS, WRITE_TOOLS

if TYPE_CHECKING:
    from routerd.core.config import ClientRule, Config, CustomEndpointConfig, ServiceConfig

__all__ = [
    "API_STYLES",
    "AUDIT_QUEUE_FULL",
    "CONTEXT_FORMATS",
    "ENVIRONMENTS",
    "LOG_LEVELS",
    "LOOPBACK_CIDRS",
    "LOOPBACK_HOSTS",
    "SERENA_PRIORITIES",
    "SERVICE_KINDS",
    "SUPPORTED_VERSIONS",
    "TASK_CATEGORIES",
    "validate_config",
    "host_problem",
    "cidr_problem",
    "url_problem",
    "endpoint_refusal",
]

#: Configuration format versions this build reads.
SUPPORTED_VERSIONS: Final = ("1.0",)
#: ``air-gapped`` forbids ``security.allow_external``; ``connected`` permits it.
ENVIRONMENTS: Final = ("air-gapped", "connected")
#: The built-in service kinds, in their default priority order.
SERVICE_KINDS: Final = (
    "ollama", "lmstudio", "jan", "openwebui", "localai",
    "vllm", "llamacpp", "koboldcpp", "gpt4all", "textgen",
)  # fmt: skip
#: How chat requests are sent (``routerd.core.services.ChatFlavor``): ``openai`` is the
#: OpenAI-compatible ``/v1`` API with SSE streaming; ``ollama`` is Ollama's ``/api/chat``.
API_STYLES: Final = ("openai", "ollama")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: The task categories the classifier produces; ``task_routing`` has one route for each.
TASK_CATEGORIES: Final = CATEGORIES
#: ``always_first``: ask Serena for code context before every routed request;
#: ``on_demand``: only for task categories with ``require_serena``.
SERENA_PRIORITIES: Final = ("always_first", "on_demand")
CONTEXT_FORMATS: Final = ("openai", "anthropic", "qwen")
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
#: ``security.audit_queue_full``: wait for room (``block``), or drop and count (``drop``).
AUDIT_QUEUE_FULL: Final = ("block", "drop")
LOOPBACK_CIDRS: Final = ("127.0.0.0/8", "::1/128")

_MIN_FRAME = 1024
_MAX_FRAME = 1024**3
_MIN_TIMEOUT_MS = 100
_MAX_TIMEOUT_MS = 3_600_000
_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")
_GO_DURATION = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?(?:ns|us|µs|ms|s|m|h))+\Z")


def validate_config(config: Config, *, source: str = "<string>") -> None:
    """Raise :class:`ConfigError` for the first invalid value in ``config``."""
    _Checker(source).run(config)


def cidr_problem(text: str) -> str | None:
    """Why ``text`` is not a network in CIDR notation (``10.0.0.0/8``), or None if it is."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            try:
                fixed = ipaddress.ip_network(text, strict=False)
            except ValueError:
                return f"invalid CIDR {text!r}: {exc}"
            return f"invalid CIDR {text!r}: host bits are set (did you mean {str(fixed)!r}?)"
        return f"invalid CIDR {text!r}: {exc}"
    return None


def host_problem(text: str) -> str | None:
    """Why ``text`` is not a host name, an IP address or a CIDR network, or None if it is."""
    if "/" in text:
        return cidr_problem(text)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return None
    if text.startswith("[") and text.endswith("]"):
        return f"invalid host {text!r}: write an IPv6 address without brackets"
    if re.fullmatch(r"[0-9.]+", text):
        return f"invalid host {text!r}: not a valid IPv4 address"
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253 or not all(_HOST_LABEL.match(x) for x in name.split(".")):
        return (
            f"invalid host {text!r}: expected a host name, an IP address or a CIDR "
            "network such as '192.168.0.0/16'"
        )
    return None


def endpoint_refusal(url: str, reason: str) -> str:
    """The message for an endpoint the egress policy refuses, saying what would allow it."""
    host = urlsplit(url).hostname or ""
    if literal_address(host) is not None:
        fix = f"add {host!r} or its network to security.allowed_cidrs"
    else:
        fix = (
            f"add {host!r} to security.allowed_hosts and the network it resolves to "
            "to security.allowed_cidrs"
        )
    return f"{url} is outside the egress allowlist: {reason}; to allow it, {fix}"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable service base URL, or None if it is."""
    if not url or any(c.isspace() for c in url):
        return f"invalid URL {url!r}: empty or contains whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        reason = str(exc)
        return f"invalid URL {url!r}: {reason[:1].lower()}{reason[1:]}"
    if parts.scheme not in ("http", "https"):
        return f"invalid URL {url!r}: the scheme must be http or https"
    if not parts.hostname:
        return f"invalid URL {url!r}: no host"
    if parts.username is not None or parts.password is not None:
        return f"invalid URL {url!r}: credentials do not belong in the URL; use api_key_env"
    if parts.query or parts.fragment:
        return f"invalid URL {url!r}: a base URL takes no query or fragment"
    if port == 0:
        return f"invalid URL {url!r}: port 0"
    problem = host_problem(parts.hostname)
    if problem is not None or "/" in parts.hostname:
        return f"invalid URL {url!r}: bad host {parts.hostname!r}"
    return None


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: DocPath, message: str) -> NoReturn:
        raise ConfigError(message, source=self.source, path=format_path(path))

    def one_of(self, path: DocPath, value: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if value not in allowed:
            self.fail(path, f"{value!r} is not one of: {', '.join(allowed)}")

    def non_empty(self, path: DocPath, value: str | None) -> None:
        if value is not None and not value.strip():
            self.fail(path, "must not be empty")

    def run(self, c: Config) -> None:
        self.one_of(("version",), c.version, SUPPORTED_VERSIONS)
        self.one_of(("environment",), c.environment, ENVIRONMENTS)
        self.daemon(c)
        self.services(c)
        for category in TASK_CATEGORIES:
            route = c.task_routing.get(category)
            for field in ("primary_models", "fallback_models"):
                for i, model in enumerate(getattr(route, field)):
                    self.non_empty(("task_routing", category, field, i), model)
        self.serena(c)
        self.context(c)
        self.sessions(c)
        self.security(c)
        self.egress(c)
        self.discovery(c)
        self.routing(c)
        http = http_problem(c.http)
        if http is not None:
            self.fail(("http", *http[0]), http[1])
        if c.environment == "air-gapped" and c.security.allow_external:
            self.fail(
                ("security", "allow_external"),
                'cannot be true when environment is "air-gapped" '
                '(set environment = "connected" to allow external hosts)',
            )
        for name, agent in c.agents.items():
            if not name.strip():
                self.fail(("agents",), "an agent name must not be empty")
            self.non_empty(
                ("agents", name, "default_model_preference"), agent.default_model_preference
            )
            if agent.context_format is not None:
                self.one_of(
                    ("agents", name, "context_format"), agent.context_format, CONTEXT_FORMATS
                )
            for i, model in enumerate(agent.preferred_models):
                self.non_empty(("agents", name, "preferred_models", i), model)

    def daemon(self, c: Config) -> None:
        d = c.daemon
        if d.socket is not None:
            self.non_empty(("daemon", "socket"), d.socket)
            if "\0" in d.socket:
                self.fail(("daemon", "socket"), "must not contain a NUL character")
            if len(d.socket.encode()) > _SUN_PATH_MAX:
                self.fail(
                    ("daemon", "socket"),
                    f"socket path is longer than {_SUN_PATH_MAX} bytes, the Unix socket limit",
                )
        if d.socket_group is not None and not _GROUP_NAME.match(d.socket_group):
            self.fail(("daemon", "socket_group"), f"invalid group name {d.socket_group!r}")
        if not _MIN_FRAME <= d.max_frame_size <= _MAX_FRAME:
            self.fail(
                ("daemon", "max_frame_size"),
                f"must be between {_MIN_FRAME} (1 KiB) and {_MAX_FRAME} (1 GiB) bytes",
            )
        if not (math.isfinite(d.slow_consumer_timeout) and d.slow_consumer_timeout > 0):
            self.fail(("daemon", "slow_consumer_timeout"), "must be a positive number of seconds")
        if not (math.isfinite(d.shutdown_grace) and d.shutdown_grace >= 0):
            self.fail(("daemon", "shutdown_grace"), "must be zero or a positive number of seconds")
        self.one_of(("daemon", "log_level"), d.log_level, LOG_LEVELS)
        self.non_empty(("daemon", "state_dir"), d.state_dir)

    def service(self, path: DocPath, s: ServiceConfig) -> None:
        if s.endpoint is not None:
            problem = url_problem(s.endpoint)
            if problem is not None:
                self.fail((*path, "endpoint"), problem)
        if not _MIN_TIMEOUT_MS <= s.timeout <= _MAX_TIMEOUT_MS:
            self.fail(
                (*path, "timeout"),
                f"must be between {_MIN_TIMEOUT_MS} and {_MAX_TIMEOUT_MS}: "
                f"the unit is milliseconds ({s.timeout} ms given)",
            )
        if s.api_style == "native":
            self.fail(
                (*path, "api_style"),
                "'native' is not an API style here: use 'ollama' for Ollama's /api/chat, "
                "'openai' for /v1",
            )
        if s.api_style is not None:
            self.one_of((*path, "api_style"), s.api_style, API_STYLES)
        for name, value in s.headers.items():
            if not _HEADER_NAME.match(name):
                self.fail((*path, "headers", name), f"invalid HTTP header name {name!r}")
            if any(ch in value for ch in "\r\n\0"):
                self.fail((*path, "headers", name), "a header value must not contain CR, LF or NUL")
        if s.api_key_env is not None and s.api_key_file is not None:
            self.fail((*path, "api_key_file"), "give api_key_env or api_key_file, not both")
        if s.api_key_env is not None and not _ENV_NAME.match(s.api_key_env):
            self.fail(
                (*path, "api_key_env"), f"invalid environment variable name {s.api_key_env!r}"
            )
        self.non_empty((*path, "api_key_file"), s.api_key_file)

    def services(self, c: Config) -> None:
        for kind, svc in c.services.builtin().items():
            self.service(("services", kind), svc)
        seen: dict[str, int] = {}
        for i, ep in enumerate(c.services.custom_endpoints):
            self.custom(i, ep, seen)

    def custom(self, i: int, ep: CustomEndpointConfig, seen: dict[str, int]) -> None:
        path: DocPath = ("services", "custom_endpoints", i)
        if not _ENDPOINT_NAME.match(ep.name):
            self.fail(
                (*path, "name"),
                f"invalid name {ep.name!r}: use letters, digits, '.', '_' and '-' (at most 64)",
            )
        if ep.name in SERVICE_KINDS:
            self.fail((*path, "name"), f"{ep.name!r} is a built-in service name; choose another")
        if ep.name in seen:
            self.fail(
                (*path, "name"), f"duplicate name {ep.name!r} (also at index {seen[ep.name]})"
            )
        seen[ep.name] = i
        self.service(path, ep)

    def serena(self, c: Config) -> None:
        s = c.serena
        self.one_of(("serena", "priority"), s.priority, SERENA_PRIORITIES)
        self.non_empty(("serena", "workspace"), s.workspace)
        seen: dict[str, DocPath] = {}
        if s.workspace:
            seen[posixpath.normpath(s.workspace)] = ("serena", "workspace")
        for i, w in enumerate(s.workspaces):
            path: DocPath = ("serena", "workspaces", i)
            if not isinstance(w, str):
                path = (*path, "path")
                for j, lang in enumerate(w.languages):
                    self.non_empty(("serena", "workspaces", i, "languages", j), lang)
            where = w if isinstance(w, str) else w.path
            self.non_empty(path, where)
            key = posixpath.normpath(where)
            if key in seen:
                self.fail(path, f"{where!r} is already listed at {format_path(seen[key])}")
            seen[key] = path
        if not s.languages:
            self.fail(("serena", "languages"), "must name at least one Serena language key")
        for i, lang in enumerate(s.languages):
            self.non_empty(("serena", "languages", i), lang)
        self.non_empty(("serena", "home"), s.home)
        for name in ("start_timeout", "call_timeout", "ping_interval", "ping_timeout",
                     "backoff_initial", "backoff_max", "context_timeout"):
            value = getattr(s, name)
            if not (math.isfinite(value) and value > 0):
                self.fail(("serena", name), f"must be more than 0 seconds ({value} given)")
        if not (math.isfinite(s.idle_timeout) and s.idle_timeout >= 0):
            self.fail(("serena", "idle_timeout"),
                      f"must be zero (never) or more seconds ({s.idle_timeout} given)")
        if s.ping_timeout > s.ping_interval:
            self.fail(("serena", "ping_timeout"),
                      f"must not exceed ping_interval ({s.ping_interval:g} s)")
        if s.backoff_max < s.backoff_initial:
            self.fail(("serena", "backoff_max"),
                      f"must be at least backoff_initial ({s.backoff_initial:g} s)")
        for field in ("read_tools", "write_tools"):
            for i, tool in enumerate(getattr(s, field)):
                self.non_empty(("serena", field, i), tool)
                if tool in NEVER_TOOLS:
                    self.fail(("serena", field, i), f"{tool!r} is never offered to clients")
                if field == "read_tools" and tool in WRITE_TOOLS:
                    self.fail(("serena", field, i),
                              f"{tool!r} changes files: list it in serena.write_tools")
        if not s.command:
            self.fail(("serena", "command"), "must name the program to run")
        for i, arg in enumerate(s.command):
            if i == 0:
                self.non_empty(("serena", "command", 0), arg)
            if "\0" in arg:
                self.fail(("serena", "command", i), "must not contain a NUL character")

    def context(self, c: Config) -> None:
        x = c.context
        t = x.compaction_threshold
        if not (math.isfinite(t) and 0 < t <= 1):
            self.fail(("context", "compaction_threshold"), f"must be > 0 and <= 1 ({t} given)")
        g = x.compaction_target
        if not (math.isfinite(g) and 0 < g < t):
            self.fail(
                ("context", "compaction_target"),
                f"must be > 0 and below compaction_threshold ({t}); {g} given",
            )

    def sessions(self, c: Config) -> None:
        s = c.sessions
        if not (math.isfinite(s.idle_expiry) and s.idle_expiry >= 0):
            self.fail(
                ("sessions", "idle_expiry"),
                f"must be a number of seconds, 0 for never ({s.idle_expiry} given)",
            )
        self.non_empty(("sessions", "summary_model"), s.summary_model)

    def discovery(self, c: Config) -> None:
        d = c.discovery

        def seconds(name: str, value: float, *, low: float = 0.0, zero: bool = False) -> None:
            ok = math.isfinite(value) and (value >= low if zero else value > low)
            if not ok:
                what = "zero or more" if zero else "more than"
                self.fail(("discovery", name), f"must be {what} {low:g} seconds ({value} given)")

        seconds("interval", d.interval, low=0.05)
        seconds("probe_timeout", d.probe_timeout, low=0.05)
        seconds("cooldown", d.cooldown, zero=True)
        if not (math.isfinite(d.backoff_cap) and d.backoff_cap >= d.interval):
            self.fail(
                ("discovery", "backoff_cap"),
                f"must be at least discovery.interval ({d.interval:g} s); {d.backoff_cap} given",
            )
        if not (math.isfinite(d.models_refresh) and d.models_refresh >= d.interval):
            self.fail(
                ("discovery", "models_refresh"),
                f"must be at least discovery.interval ({d.interval:g} s); "
                f"{d.models_refresh} given",
            )
        if not (math.isfinite(d.jitter) and 0 <= d.jitter < 1):
            self.fail(("discovery", "jitter"), f"must be >= 0 and < 1 ({d.jitter} given)")
        if d.slow_request is not None:
            seconds("slow_request", d.slow_request)

    def routing(self, c: Config) -> None:
        r = c.routing
        self.one_of(("routing", "default_category"), r.default_category, TASK_CATEGORIES)
        m = r.min_confidence
        if not (math.isfinite(m) and 0 <= m <= 1):
            self.fail(("routing", "min_confidence"), f"must be >= 0 and <= 1 ({m} given)")
        if not (math.isfinite(r.swap_wait) and r.swap_wait >= 0):
            self.fail(
                ("routing", "swap_wait"), f"must be zero or more seconds ({r.swap_wait} given)"
            )
        if r.keep_alive is not None:
            self.keep_alive(r.keep_alive)
        for name in ("connect", "first_token", "idle", "overall"):
            value = getattr(r.timeouts, name)
            if not (math.isfinite(value) and value > 0):
                self.fail(
                    ("routing", "timeouts", name), f"must be more than 0 seconds ({value} given)"
                )
        for service, limits in r.concurrency.items():
            if not service.strip():
                self.fail(("routing", "concurrency"), "a service name must not be empty")
            for model in limits.models:
                if not model.strip():
                    self.fail(("routing", "concurrency", service, "models"), "empty model name")

    def keep_alive(self, value: int | str) -> None:
        # Ollama reads a number as seconds and a string as a Go duration ("30m", "1h30m", "-1m");
        # a string without a unit ("300") is refused by Ollama, so it is refused here.
        if isinstance(value, str) and not _GO_DURATION.match(value):
            self.fail(
                ("routing", "keep_alive"),
                f'{value!r} is not a duration such as "30m" or "1h" '
                "(write a number of seconds without quotes; negative keeps the model loaded)",
            )

    def security(self, c: Config) -> None:
        s = c.security
        for i, host in enumerate(s.allowed_hosts):
            problem = host_problem(host)
            if problem is not None:
                self.fail(("security", "allowed_hosts", i), problem)
        for i, net in enumerate(s.allowed_cidrs):
            problem = cidr_problem(net)
            if problem is not None:
                self.fail(("security", "allowed_cidrs", i), problem)
        self.non_empty(("security", "audit_log_path"), s.audit_log_path)
        self.one_of(("security", "audit_queue_full"), s.audit_queue_full, AUDIT_QUEUE_FULL)
        for i, group in enumerate(s.allowed_groups):
            if not _GROUP_NAME.match(group):
                self.fail(("security", "allowed_groups", i), f"invalid group name {group!r}")
        for i, rule in enumerate(s.clients):
            self.client_rule(i, rule)
        for i, entry in enumerate(s.model_checksums):
            if not _SHA256.match(entry.sha256):
                self.fail(
                    ("security", "model_checksums", i, "sha256"),
                    f"{entry.sha256!r} is not a SHA-256 (64 hex digits, as sha256sum prints)",
                )
            self.non_empty(("security", "model_checksums", i, "model"), entry.model)
        self.non_empty(("security", "ollama_models"), s.ollama_models)

    def client_rule(self, i: int, rule: ClientRule) -> None:
        path: DocPath = ("security", "clients", i)
        given = [k for k in ("uid", "user", "group") if getattr(rule, k) is not None]
        if len(given) != 1:
            self.fail(path, "give exactly one of uid, user or group")
        if rule.user is not None and not _GROUP_NAME.match(rule.user):
            self.fail((*path, "user"), f"invalid user name {rule.user!r}")
        if rule.group is not None and not _GROUP_NAME.match(rule.group):
            self.fail((*path, "group"), f"invalid group name {rule.group!r}")
        if not rule.methods:
            self.fail((*path, "methods"), "list the methods this client may call, e.g. [\"status\"]")
        for j, pattern in enumerate(rule.methods):
            if not pattern.strip() or any(ch.isspace() for ch in pattern):
                self.fail((*path, "methods", j), f"invalid method pattern {pattern!r}")

    def egress(self, c: Config) -> None:
        policy = policy_from_config(c.security)
        if policy.allow_external:
            return
        endpoints: list[tuple[DocPath, str]] = [
            (("services", kind, "endpoint"), svc.endpoint)
            for kind, svc in c.services.builtin().items()
            if svc.endpoint is not None
        ]
        endpoints += [
            (("services", "custom_endpoints", i, "endpoint"), ep.endpoint)
            for i, ep in enumerate(c.services.custom_endpoints)
        ]
        for path, url in endpoints:
            verdict = check_url(policy, url)
            if not verdict.allowed:
                self.fail(path, endpoint_refusal(url, verdict.reason))
