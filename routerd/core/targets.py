"""Which addresses routerd probes, under which names, and whose settings apply to each.

Invariants:

* ``plan_targets`` is pure: the configured services (and, in WSL or a container, the name of
  the host as the container sees it) in, a tuple of ``ProbeTarget`` out, in priority order.
* One target per server address among the built-in kinds: kinds that share an address (8080:
  Open WebUI, LocalAI, llama.cpp; 8000: vLLM and llama-cpp-python) are one target, probed once
  and shown once as whatever answers there. Custom endpoints are always targets of their own
  (their name, headers and key are theirs); two targets that reach one server are grouped
  later, on evidence (``backends.group_backends``).
* Names are unique and stable across probes: a built-in kind's configured address, or its
  first usual port when no other kind claims it, is named after the kind (``ollama``); its
  other addresses ``kind:port`` (``jan:6767``); an address several kinds claim
  ``local:port`` (``local:8080``); the container host's twin of a target ``<name>@host``.
  Custom endpoint names cannot contain ``:`` or ``@``, so they never collide with these.
* llama-cpp-python has no section of its own: it shares vLLM's port and follows
  ``services.vllm`` (enabled, priority, timeout, key).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from routerd.core.config import CustomEndpointConfig, ServiceConfig, ServicesConfig
from routerd.core.services import (
    SERVICES,
    ChatFlavor,
    ProbeStep,
    ServiceKind,
    canonical_base_url,
    custom_spec,
    group_endpoints,
    identity_plan,
    spec_for,
)

__all__ = [
    "TargetOrigin",
    "ProbeTarget",
    "CONTAINER_HOST_NAME",
    "plan_targets",
    "discovery_plan",
    "settings_for",
    "config_key",
    "is_loopback_url",
]

TargetOrigin = Literal["default", "configured", "custom", "container_host"]

#: The name Docker Desktop (and ``--add-host=host.docker.internal:host-gateway``) gives the
#: machine a container or WSL distribution runs on.
CONTAINER_HOST_NAME: Final = "host.docker.internal"

# Kinds with no configuration section of their own, and the section they follow.
_FOLLOWS: Final[dict[str, str]] = {"llama_cpp_python": "vllm"}


class ProbeTarget(msgspec.Struct, frozen=True):
    """One address to probe.

    ``candidates`` are the kinds expected there, most likely first (``("custom",)`` for a
    custom endpoint); ``flavor`` is a custom endpoint's configured API style. ``configs`` name
    the configuration entries whose settings (headers, key, priority, timeout) may apply, in
    the candidates' order: a kind (``"ollama"``) or ``"custom:<name>"``.
    """

    name: str
    base_url: str
    candidates: tuple[ServiceKind, ...]
    origin: TargetOrigin
    configs: tuple[str, ...]
    priority: int
    flavor: ChatFlavor | None = None


def config_key(kind: ServiceKind) -> str:
    """The ``services`` section that configures ``kind`` (llama-cpp-python follows vLLM)."""
    return _FOLLOWS.get(kind, kind)


def _port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def is_loopback_url(url: str) -> bool:
    """Does ``url`` name this machine (``localhost``, ``127.x``, ``::1``)?"""
    return canonical_base_url(url).split("://", 1)[-1].startswith("loopback:")


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _builtin_claims(
    services: ServicesConfig,
) -> list[tuple[ServiceKind, str, bool, int]]:
    """``(kind, url, configured, priority)`` for every enabled built-in kind, by priority."""
    claims: list[tuple[ServiceKind, str, bool, int]] = []
    sections = services.builtin()
    order = sorted(sections, key=lambda k: sections[k].priority)  # stable: table order on ties
    for key in order:
        cfg = sections[key]
        if not cfg.enabled:
            continue
        followers = [k for k, v in _FOLLOWS.items() if v == key]
        for spec in (s for s in SERVICES if s.kind == key or s.kind in followers):
            if cfg.endpoint is not None:
                claims.append((spec.kind, cfg.endpoint.rstrip("/"), True, cfg.priority))
            else:
                claims.extend((spec.kind, url, False, cfg.priority) for url in spec.base_urls)
    return claims


def _builtin_targets(services: ServicesConfig) -> list[ProbeTarget]:
    claims = _builtin_claims(services)
    explicit: dict[str, tuple[str, list[ServiceKind]]] = {}  # canonical -> (url, kinds)
    priorities: dict[str, int] = {}
    for kind, url, configured, prio in claims:
        key = canonical_base_url(url)
        priorities.setdefault(key, prio)
        if configured:
            if key not in explicit:
                priorities[key] = prio  # the configured kind's, not a default claim's
            explicit.setdefault(key, (url, []))[1].append(kind)
    endpoints = group_endpoints((kind, url) for kind, url, _, _ in claims)
    position = {canonical_base_url(e.base_url): i for i, e in enumerate(endpoints)}
    taken: set[str] = set()
    out: list[ProbeTarget] = []
    # Configured addresses claim their kind's plain name first.
    for ep in sorted(endpoints, key=lambda e: canonical_base_url(e.base_url) not in explicit):
        key = canonical_base_url(ep.base_url)
        url, candidates = ep.base_url, ep.candidates
        if key in explicit:
            # The configured spelling and kinds first: the user said what runs there.
            url, kinds = explicit[key]
            candidates = tuple(dict.fromkeys((*kinds, *candidates)))
        first = candidates[0]
        port = _port(url)
        home = key in explicit or spec_for(first).ports[:1] == (port,)
        if key in explicit or len(candidates) == 1:
            name = first if home and first not in taken else f"{first}:{port}"
        else:
            name = f"local:{port}"
        taken.add(name)
        out.append(
            ProbeTarget(
                name=name,
                base_url=url,
                candidates=candidates,
                origin="configured" if key in explicit else "default",
                configs=tuple(dict.fromkeys(config_key(k) for k in candidates)),
                priority=priorities[key],
            )
        )
    return sorted(out, key=lambda t: (t.priority, position[canonical_base_url(t.base_url)]))


def _custom_target(ep: CustomEndpointConfig) -> ProbeTarget:
    flavor: ChatFlavor = "ollama" if ep.api_style == "ollama" else "openai"
    return ProbeTarget(
        name=ep.name,
        base_url=ep.endpoint.rstrip("/"),
        candidates=("custom",),
        origin="custom",
        configs=(f"custom:{ep.name}",),
        priority=ep.priority,
        flavor=flavor,
    )


def plan_targets(
    services: ServicesConfig, *, container_host: str | None = None
) -> tuple[ProbeTarget, ...]:
    """Every address to probe, by priority (built-in kinds before custom endpoints on ties).

    ``container_host`` (e.g. ``host.docker.internal``, only when it resolves and the egress
    policy allows it): every loopback target also gets a twin at that host, named
    ``<name>@host``; the loopback target stays.
    """
    targets = _builtin_targets(services)
    targets.extend(_custom_target(ep) for ep in services.custom_endpoints if ep.enabled)
    if container_host:
        twins = [
            msgspec.structs.replace(
                t,
                name=f"{t.name}@host",
                base_url=_with_host(t.base_url, container_host),
                origin="container_host",
            )
            for t in targets
            if is_loopback_url(t.base_url)
        ]
        targets.extend(twins)
    return tuple(sorted(targets, key=lambda t: (t.priority, t.origin == "custom")))


def discovery_plan(target: ProbeTarget, kind: ServiceKind | None = None) -> tuple[ProbeStep, ...]:
    """The GETs of a full discovery of ``target``.

    Without ``kind``: what tells its candidates apart (a custom endpoint: its API flavour's
    plan). With ``kind`` (identified): that kind's whole plan, per-model steps left out.
    """
    if kind is not None and kind != "custom":
        return identity_plan((kind,))
    if target.flavor is not None:
        return tuple(s for s in custom_spec(target.flavor).plan if not s.per_model)
    return identity_plan(target.candidates)


def settings_for(
    services: ServicesConfig, target: ProbeTarget, kind: ServiceKind | None = None
) -> ServiceConfig:
    """The configuration entry that applies to ``target`` when ``kind`` answers there.

    A custom endpoint's own entry; else the identified kind's section when it is one of the
    target's, else the first candidate's.
    """
    keys: Iterable[str] = target.configs
    if kind is not None and config_key(kind) in target.configs:
        keys = (config_key(kind),)
    for key in keys:
        if key.startswith("custom:"):
            name = key.removeprefix("custom:")
            for ep in services.custom_endpoints:
                if ep.name == name:
                    return ep
        else:
            section: ServiceConfig = services.builtin()[key]
            return section
    return ServiceConfig()
