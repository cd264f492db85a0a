"""Value checks for a typed configuration, and the closed sets of names it may use.

Types and simple ranges are enforced by the schema in ``routerd.core.config``; this module
checks what a type cannot say: URLs, hosts and CIDRs, names from closed sets, uniqueness, and
rules between fields (``compaction_target < compaction_threshold``; an air-gapped environment
cannot allow external hosts).

Invariants:

* :func:`validate_config` returns ``None`` or raises ``ConfigError`` for the *first* problem,
  in document order, with the exact path of the offending value.
* It is pure: no name resolution, no file or environment access. Whether a configured endpoint
  is inside the allowed hosts is the security module's decision at run time, not checked here.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NoReturn
from urllib.parse import urlsplit

from routerd.core.catalog import CATEGORIES
from routerd.core.config_text import ConfigError, DocPath, format_path

if TYPE_CHECKING:
    from routerd.core.config import Config, CustomEndpointConfig, ServiceConfig

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
    "validate_config",
    "host_problem",
    "cidr_problem",
    "url_problem",
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
        self.security(c)
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
        for i, w in enumerate(s.workspaces):
            self.non_empty(("serena", "workspaces", i), w)
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
