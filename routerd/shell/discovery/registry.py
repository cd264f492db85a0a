"""The daemon's live view of its model servers: health, identity, models and backend groups.

Probing loops feed it probe results, the routing feature feeds it the outcomes of real
requests; both go through the same health machine (``routerd.core.health``). Clients read it
through ``services.list``, ``models.list`` and ``events.subscribe``.

Invariants:

* Every change of a service's shown state or kind is logged once, with its reason, and
  published once as a ``service`` event; a probe that changes nothing is neither.
* A model that disappears from a server's list, or whose server stops answering, leaves
  :meth:`ServiceRegistry.available_models` at once (``models`` event).
* Nothing here waits: every method is synchronous, so a handler or a request path can call it
  without yielding, and a slow event subscriber is dropped rather than waited for.
* Time is trio's clock (``clock()``); wire timestamps are converted to epoch seconds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import trio

from routerd.core.backends import fingerprint, group_backends
from routerd.core.config import Config
from routerd.core.discovery import ModelDiff, ServiceReport, diff_models, resolve_context
from routerd.core.health import (
    Admission,
    HealthEvent,
    HealthInput,
    Transition,
    admit,
    initial,
    step,
)
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.targets import config_key, plan_targets, settings_for
from routerd.shell.logs import event
from routerd_client.protocol import (
    ModelInfo,
    ModelsChange,
    ServiceChange,
    ServiceInfo,
    ServiceRemoved,
)

from .access import AvailableModel, Backend, health_policy, make_backend, server_only
from .credentials import NO_CREDENTIALS, Credentials
from .events import EventHub, Subscription
from .monitor import EMPTY_STATES, Monitor, model_info, service_info
from .probe import ProbeResult

__all__ = ["ServiceRegistry"]

log = logging.getLogger("routerd.discovery")

_ONLINE: Final = frozenset({"online", "busy"})


class ServiceRegistry:
    """Services, their health and models. Create it with the configuration in force; the
    discovery task (``service.Discovery``) keeps it up to date."""

    def __init__(
        self,
        config: Config,
        *,
        instance_id: str | None = None,
        clock: Callable[[], float] = trio.current_time,
        rand: random.Random | None = None,
        hub: EventHub | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.clock = clock
        self._rand = rand or random.Random()
        self.hub = hub or EventHub(config.discovery.subscriber_queue)
        self.config = config
        self.policy = health_policy(config.discovery)
        self._credentials: dict[str, Credentials] = {}
        # The Backend per (service, identified kind), asked on every routed request: what it
        # depends on (settings, credentials) changes only with the kind or in configure().
        self._backends: dict[tuple[str, str | None], Backend] = {}
        self._monitors: dict[str, Monitor] = {}
        self._groups: dict[str, str] = {}
        self._first_round_logged = False
        self.configured = False  # credentials read and targets planned (the task started)
        self._changed = trio.Event()

    # --- configuration ------------------------------------------------------------------------

    def configure(
        self,
        config: Config,
        credentials: Mapping[str, Credentials],
        *,
        container_host: str | None = None,
    ) -> None:
        """Apply a configuration: keep the monitors of unchanged addresses (and ask them to
        look again), start fresh ones for new addresses, forget removed ones."""
        now = self.clock()
        self.config = config
        self._backends.clear()
        self.policy = health_policy(config.discovery)
        self.hub.queue_size = config.discovery.subscriber_queue
        self._credentials = dict(credentials)
        host = container_host if config.discovery.container_host else None
        old = self._monitors
        new: dict[str, Monitor] = {}
        for t in plan_targets(config.services, container_host=host):
            m = old.get(t.name)
            same = m is not None and (m.target.base_url, m.target.candidates, m.target.flavor) == (
                t.base_url,
                t.candidates,
                t.flavor,
            )
            if m is not None and same:
                m.target, m.blocked = t, None
                self._step(m, HealthEvent("hint", "configuration reloaded"), now)
                new[t.name] = m
            else:
                new[t.name] = Monitor(t, initial(now))
        self._monitors = new
        for name, m in old.items():
            if new.get(name) is not m:
                self._publish_models(m, self._set_models(m, ()))
                if name not in new:
                    self.hub.publish("service.removed", ServiceRemoved(name))
        for name, m in new.items():
            if old.get(name) is not m:
                self.hub.publish("service", ServiceChange(self._info(m)))
        self.configured = True
        self._regroup()
        self._touch()

    # --- reading ------------------------------------------------------------------------------

    def monitors(self) -> list[Monitor]:
        """Every monitor, in priority order."""
        return list(self._monitors.values())

    def get(self, name: str) -> Monitor | None:
        return self._monitors.get(name)

    def services(self) -> list[ServiceInfo]:
        return [self._info(m) for m in self._monitors.values()]

    def service(self, name: str) -> ServiceInfo | None:
        m = self._monitors.get(name)
        return None if m is None else self._info(m)

    def models(self, service: str | None = None, *, available: bool = False) -> list[ModelInfo]:
        """Every known model (of one service), optionally only those routable now."""
        if not self._monitors:
            return []  # before the discovery task started (maybe outside trio)
        now = self.clock()
        out: list[ModelInfo] = []
        for m in self._monitors.values():
            if service is not None and m.name != service:
                continue
            up = m.routable(now, self.policy)
            if available and not up:
                continue
            out.extend(model_info(m, x, available=up, group=self._group(m)) for x in m.models)
        return out

    def available_models(self, *, include_unavailable: bool = False) -> list[AvailableModel]:
        """Models of the services that would admit a request now (all known models with
        ``include_unavailable``, for saying why one cannot be used), in priority order.

        Empty until the discovery task has started (it may be called before trio runs)."""
        if not self._monitors:
            return []
        now = self.clock()
        out: list[AvailableModel] = []
        for m in self._monitors.values():
            if m.blocked is not None:
                decision: Admission = "refuse"
            else:
                decision = admit(m.health, now, self.policy)[0]
            if decision == "refuse" and not include_unavailable:
                continue
            report = m.report
            out.extend(
                AvailableModel(
                    model=server_only(x),
                    service=m.name,
                    kind=m.kind,
                    group=self._groups.get(m.name, m.name),
                    state="blocked" if m.blocked is not None else m.health.state,
                    admission=decision,
                    priority=self._priority(m),
                    busy_slots=report.busy_slots if report else None,
                    total_slots=report.total_slots if report else None,
                )
                for x in m.models
            )
        return out

    def backend(self, name: str) -> Backend | None:
        """How to reach service ``name`` (its URL, API flavour, headers, limits)."""
        m = self._monitors.get(name)
        return None if m is None else self._backend_of(m)

    def _backend_of(self, m: Monitor) -> Backend:
        key = (m.name, m.kind)
        backend = self._backends.get(key)
        if backend is None:
            cfg = settings_for(self.config.services, m.target, m.kind)
            backend = self._backends[key] = make_backend(m, cfg, self.credentials_for(m))
        return backend

    def credentials_for(self, m: Monitor) -> Credentials:
        """The identified kind's credentials, else the first candidate's that has any."""
        keys = list(m.target.configs)
        if m.kind is not None and config_key(m.kind) in keys:
            keys = [config_key(m.kind)]
        found = [self._credentials[k] for k in keys if k in self._credentials]
        for cred in found:
            if cred.headers() or cred.problem:
                return cred
        return found[0] if found else NO_CREDENTIALS

    def summary(self) -> dict[str, Any]:
        """The ``services`` status component: ``"3/12 online"`` and counts by state."""
        states: dict[str, int] = {}
        for m in self._monitors.values():
            states[m.state] = states.get(m.state, 0) + 1
        online = sum(n for s, n in states.items() if s in _ONLINE)
        total = len(self._monitors)
        out: dict[str, Any] = {
            "summary": f"{online}/{total} online",
            "online": online,
            "total": total,
            "models": sum(len(m.models) for m in self._monitors.values()),
            "states": states,
            "watchers": self.hub.subscribers,
        }
        if not self.configured:
            out["summary"] += " (discovery starting)"
        return out

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is checked again after every probe result,
        request outcome and reload the registry records."""
        while not predicate():
            await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- feeding ------------------------------------------------------------------------------

    def admit(self, name: str) -> Admission:
        """May a request go to ``name`` now? ``trial`` is a degraded service's one attempt
        after its cool-down; report its outcome with :meth:`report_outcome`."""
        m = self._monitors.get(name)
        if m is None or m.blocked is not None:
            return "refuse"
        decision, m.health = admit(m.health, self.clock(), self.policy)
        return decision

    def report_outcome(
        self,
        name: str,
        outcome: HealthInput | HealthEvent,
        *,
        latency: float | None = None,
        detail: str = "",
    ) -> None:
        """Feed the outcome of a real request to ``name`` (see ``outcomes.classify_response``
        and :func:`routerd.shell.discovery.outcome_from_exception`). ``latency`` is the time
        to the first byte, in seconds. Unknown names are ignored."""
        m = self._monitors.get(name)
        if m is None or m.blocked is not None:
            return
        ev = outcome if isinstance(outcome, HealthEvent) else HealthEvent(outcome, detail, latency)
        tr = self._step(m, ev, self.clock(), announce=False)
        if tr.changed:
            diff = self._set_models(m, ()) if m.health.state in EMPTY_STATES else None
            self._announce(m, tr.previous, tr.reason, tr.quiet)
            self._publish_models(m, diff)
        self._touch()

    def hint(self, name: str | None = None, detail: str = "asked to look again") -> None:
        """Something suggests ``name`` (default: every service) may be back: probe it now."""
        now = self.clock()
        for m in self._monitors.values():
            if name is None or m.name == name:
                self._step(m, HealthEvent("hint", detail), now)

    def apply_probe(self, m: Monitor, r: ProbeResult) -> None:
        """Record one probe of ``m`` (ignored if a reload replaced ``m`` meanwhile)."""
        if self._monitors.get(m.name) is not m:
            return
        now = self.clock()
        if r.blocked is not None:
            before = m.state
            m.blocked, m.last_error, m.latency = r.blocked, r.error, None
            cleared = self._set_models(m, ())
            if before != "blocked":
                self._announce(m, before, f"refused by the egress policy: {r.blocked}", False)
            self._publish_models(m, cleared)
            self._touch()
            return
        kind_before = m.kind
        if r.answers is not None:
            m.answers, m.shows = r.answers, r.shows
            if r.full:
                m.last_full = now
        if r.kind is not None or r.input in ("probe_foreign", "probe_routerd"):
            # What answers now; a stranger is not the model server that was there before.
            m.kind, m.version = r.kind, r.version
        m.latency = r.latency
        m.last_error = self._explain(m, r)
        tr = self._step(m, HealthEvent(r.input, r.detail), now, announce=False)
        diff: ModelDiff | None = None
        if r.report is not None:
            m.report = r.report
            diff = self._set_models(m, r.report.models)
        elif m.health.state in EMPTY_STATES:
            m.report = None
            diff = self._set_models(m, ())
        # The state change first, then what it did to the models (log and events alike).
        if tr.changed or m.kind != kind_before:
            self._announce(m, tr.previous, tr.reason if tr.changed else r.detail, tr.quiet)
        self._publish_models(m, diff)
        self._log_first_round()
        self._touch()

    # --- internals ----------------------------------------------------------------------------

    def _step(
        self, m: Monitor, ev: HealthEvent, now: float, *, announce: bool = True
    ) -> Transition:
        tr = step(m.health, ev, now=now, policy=self.policy, rand=self._rand.random())
        m.health = tr.health
        if tr.probe_now:
            m.wake.set()
        if announce and tr.changed:
            self._announce(m, tr.previous, tr.reason, tr.quiet)
        return tr

    def _explain(self, m: Monitor, r: ProbeResult) -> str | None:
        """The probe's error, with what to do when a key is missing or refused."""
        if r.input != "probe_unauthorized":
            return r.error
        cred = self.credentials_for(m)
        if cred.problem:
            return f"{r.error}; {cred.problem}"
        if cred.has_key:
            return f"{r.error}; the configured API key was refused"
        where = (
            f"services.custom_endpoints ({m.name})"
            if m.target.origin == "custom"
            else f"services.{config_key(m.kind or m.target.candidates[0])}"
        )
        return f"{r.error}; set api_key_env or api_key_file in {where}"

    def _announce(self, m: Monitor, previous: str, reason: str, quiet: bool) -> None:
        state = m.state
        level = logging.DEBUG if quiet or (previous == "unknown" and state == "offline") else (
            logging.INFO
        )
        what = m.kind or "/".join(m.target.candidates)
        log.log(
            level,
            "service %s (%s at %s): %s -> %s: %s",
            m.name, what, m.target.base_url, previous, state, reason,
            extra=event("service_state", service=m.name, state=state, previous=previous),
        )  # fmt: skip
        self.hub.publish("service", ServiceChange(self._info(m), previous=previous))

    def _set_models(self, m: Monitor, models: tuple[DiscoveredModel, ...]) -> ModelDiff:
        """Replace ``m``'s models (context lengths resolved); publish nothing yet."""
        resolved = tuple(resolve_context(x) for x in models)
        diff = diff_models(m.models, resolved)
        m.models = resolved
        self._regroup()
        return diff

    def _publish_models(self, m: Monitor, diff: ModelDiff | None) -> None:
        """Log (ids added or removed) and publish a ``models`` event for ``diff``."""
        if diff is None or diff.empty:
            return
        if diff.added or diff.removed:
            log.info(
                "service %s: models %s",
                m.name,
                " ".join([*(f"+{i}" for i in diff.added), *(f"-{i}" for i in diff.removed)]),
                extra=event("models_changed", service=m.name),
            )
        up = m.routable(self.clock(), self.policy)
        group = self._group(m)
        self.hub.publish(
            "models",
            ModelsChange(
                service=m.name,
                added=list(diff.added),
                removed=list(diff.removed),
                changed=list(diff.changed),
                models=[model_info(m, x, available=up, group=group) for x in m.models],
            ),
        )

    def _regroup(self) -> None:
        prints = [
            fingerprint(m.name, m.target.base_url, m.report or ServiceReport(m.kind or "custom"))
            for m in self._monitors.values()
            if m.blocked is None
        ]
        self._groups = group_backends(prints)

    def _group(self, m: Monitor) -> str | None:
        """The group name when ``m`` shares its server with another service, else None."""
        group = self._groups.get(m.name, m.name)
        shared = sum(1 for g in self._groups.values() if g == group) > 1
        return group if shared else None

    def _priority(self, m: Monitor) -> int:
        return self._backend_of(m).priority

    def _wall(self, t: float) -> float:
        return time.time() - (self.clock() - t)

    def _info(self, m: Monitor) -> ServiceInfo:
        return service_info(m, wall=self._wall, priority=self._priority(m), group=self._group(m))

    def _log_first_round(self) -> None:
        if self._first_round_logged or any(
            m.health.state == "unknown" and m.blocked is None for m in self._monitors.values()
        ):
            return
        self._first_round_logged = True
        up = [m.name for m in self._monitors.values() if m.state in _ONLINE]
        log.info(
            "discovery: %d/%d services online%s",
            len(up), len(self._monitors), f": {', '.join(up)}" if up else "",
            extra=event("discovery_ready", online=len(up), total=len(self._monitors)),
        )  # fmt: skip
