"""The routing feature's state: what the configuration says, what the servers offer now, the
fair queue, the egress-checked HTTP client and the token calibrations.

Invariants:

* The catalog (the built-in model database merged with ``models``), the routing policy, the
  timeouts and the queue policy are derived from the configuration in force, once per
  reload (``on_reload``); a request reads them without rebuilding anything.
* Candidates come from the discovery registry's ``available_models()`` through the core's
  ``candidate_from_discovered``; a candidate is rebuilt only when what it depends on changed
  (the model's report, its health, routerd's own queue figures), since resolving a name
  against the catalog is the costly part.
* A model the checksum check blocked (``routerd.shell.checksums``) stays a candidate marked
  ``blocked``, so that the plan rejects it and says why; nothing is looked up when nothing
  is blocked.
* Every model call goes through the egress-checked clients made in :meth:`Router.run` (the
  lean ``WireClient`` for plain ``http://`` servers, ``make_http_client`` for the rest), whose
  egress policy is re-read on every request, so a reload applies at once.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec
import trio

from routerd import __version__
from routerd.core.candidates import Candidate, candidate_from_discovered
from routerd.core.catalog import Catalog, CatalogError
from routerd.core.compaction import CompactionPolicy
from routerd.core.config import Config
from routerd.core.context import Message
from routerd.core.egress import EgressPolicy, policy_from_config
from routerd.core.fallback import Timeouts
from routerd.core.queueing import QueuePolicy, limits_for
from routerd.core.routing_policy import RoutingPolicy
from routerd.core.routing_policy import policy_from_config as routing_policy
from routerd.core.sessions import token_family
from routerd.core.tokens import Calibration, observe_prompt, observe_text
from routerd.data import load_builtin_catalog
from routerd.shell.backends import ChatBackend, HttpChatBackend
from routerd.shell.backends.upstream import HttpxTransport, WireTransport
from routerd.shell.backends.wire import WireClient
from routerd.shell.discovery import AvailableModel, Backend, ServiceRegistry
from routerd.shell.http import OnRefused, make_http_client
from routerd.shell.sessions import SessionManager, compaction_policy
from routerd.shell.stats import StatsCollector

from .queue import SlotQueue

__all__ = ["Router", "View"]

log = logging.getLogger("routerd.routing")

#: Candidates kept in the cache before it is emptied (a bound, not a tuning knob).
_CACHE_MAX: Final = 4096


@dataclass(frozen=True)
class View:
    """What routing sees of the servers for one request: the candidates, each service's
    backend group (the queue's server key) and how to reach it."""

    candidates: list[Candidate]
    groups: dict[str, str]
    backends: dict[str, Backend]


@dataclass
class _Facts:
    """What was last told to the queue about one backend group."""

    limits_set: bool = False
    resident_set: bool = False
    resident: frozenset[str] | None = None
    slots_set: bool = False
    slots: int | None = None


@dataclass
class Router:
    """One daemon's routing state (see the module docstring). ``chat`` is set by :meth:`run`
    (tests may set their own :class:`ChatBackend` before the daemon starts)."""

    config: Config
    registry: ServiceRegistry
    on_refused: OnRefused | None = None
    chat: ChatBackend | None = None
    sessions: Callable[[], SessionManager | None] = lambda: None
    stats: Callable[[], StatsCollector | None] = lambda: None
    blocked: Callable[[], Mapping[str, str]] = dict  # model -> why it is blocked
    builtin: Catalog = field(default_factory=load_builtin_catalog)
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    os_name: str = field(default_factory=lambda: platform.platform(terse=True))

    def __post_init__(self) -> None:
        self.queue = SlotQueue()
        self.http: httpx.AsyncClient | None = None
        self._cache: dict[tuple[Any, ...], Candidate] = {}
        self._facts: dict[str, _Facts] = {}
        self._apply(self.config)

    # --- configuration ---------------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        self.config = config
        try:
            self.catalog = self.builtin.merge(config.models)
        except CatalogError as exc:  # validate_config checks this; keep routing regardless
            log.error("the configuration's models do not merge into the model database: %s", exc)
            self.catalog = self.builtin
        self.policy: RoutingPolicy = routing_policy(config, self.catalog)
        self.timeouts = Timeouts.from_config(config.routing.timeouts)
        self.compaction: CompactionPolicy = compaction_policy(config.context)
        self.egress: EgressPolicy = policy_from_config(config.security)
        rc = config.routing
        self.queue.set_policy(
            QueuePolicy(swap_wait=rc.swap_wait, default_capacity=1, round_robin=rc.round_robin)
        )
        self._cache.clear()
        for facts in self._facts.values():
            facts.limits_set = False

    def on_reload(self, old: Config, new: Config) -> None:
        """Reload hook: rebuild everything derived from the configuration."""
        self._apply(new)

    # --- the HTTP client -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the egress-checked HTTP client for the daemon's lifetime."""
        if self.chat is not None:
            task_status.started()
            await trio.sleep_forever()
        headers = {"User-Agent": f"routerd/{__version__}"}
        client = make_http_client(
            lambda: self.egress,
            timeout=self.timeouts.connect,  # each call sets its own; this bounds a forgotten one
            headers=headers,
            on_refused=self.on_refused,
        )
        wire = WireClient(lambda: self.egress, headers=headers, on_refused=self.on_refused)
        async with client, wire:
            # The lean client for plain http:// servers, httpx for the rest (backends.wire).
            self.chat = HttpChatBackend(WireTransport(wire, HttpxTransport(client)))
            self.http = client  # for the calls that are not chats (/tokenize)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.chat = None
                self.http = None

    # --- what the servers offer ------------------------------------------------------------

    def view(self) -> View:
        """The candidates of this moment (see the module docstring)."""
        queue = self.queue
        core = queue.core
        cache = self._cache
        if len(cache) > _CACHE_MAX:
            cache.clear()
        out: list[Candidate] = []
        groups: dict[str, str] = {}
        backends: dict[str, Backend] = {}
        by_group: dict[str, list[AvailableModel]] = {}
        blocked = self.blocked()
        for am in self.registry.available_models():
            backend = backends.get(am.service)
            if backend is None:
                # The registry's (it renews it when a reload has re-read the API keys).
                backend = self.registry.backend(am.service)
                if backend is None:
                    continue
                backends[am.service] = backend
                groups[am.service] = am.group
            by_group.setdefault(am.group, []).append(am)
            in_flight = core.in_flight(am.group, am.model.id)
            queued = core.waiting(am.group, am.model.id)
            key = (am, in_flight, queued, backend.chat_flavor)
            c = cache.get(key)
            if c is None:
                c = cache[key] = candidate_from_discovered(
                    am.model,
                    self.catalog,
                    service_priority=am.priority,
                    health="offline" if am.state == "blocked" else am.state,
                    admission=am.admission,
                    in_flight=in_flight,
                    queued=queued,
                    busy_slots=am.busy_slots,
                    total_slots=am.total_slots,
                    window_settable=backend.chat_flavor == "ollama",
                )
            if blocked and am.model.id in blocked:
                c = msgspec.structs.replace(c, blocked=blocked[am.model.id])
            out.append(c)
        for group, models in by_group.items():
            self._tell_queue(group, models)
        return View(out, groups, backends)

    def _tell_queue(self, group: str, models: list[AvailableModel]) -> None:
        """Give the queue a group's limits, resident models and slot count when they change."""
        facts = self._facts.get(group)
        if facts is None:
            facts = self._facts[group] = _Facts()
        first = models[0]
        if not facts.limits_set:
            cfg = self.config.routing.concurrency.get(first.service)
            self.queue.set_limits(group, limits_for(first.kind, cfg))
            facts.limits_set = True
        loaded = [m.model.loaded for m in models]
        resident = (
            None
            if any(x is None for x in loaded)
            else frozenset(m.model.id for m in models if m.model.loaded)
        )
        if not facts.resident_set or facts.resident != resident:
            facts.resident_set, facts.resident = True, resident
            self.queue.set_resident(group, resident)
        if not facts.slots_set or facts.slots != first.total_slots:
            facts.slots_set, facts.slots = True, first.total_slots
            self.queue.set_slots(group, first.total_slots)

    # --- calibration -----------------------------------------------------------------------

    def calibration(self, model_id: str) -> Calibration | None:
        """What the servers' prompt counts taught about ``model_id`` (the sessions feature's
        store, which persists it, when installed)."""
        sessions = self.sessions()
        if sessions is not None:
            return sessions.calibration(model_id)
        return self.calibrations.get(model_id)

    def calibrate(
        self, model_id: str, sent: Sequence[Message], prompt_tokens: int, *, window: int
    ) -> None:
        """Learn from a server's prompt count for ``sent`` (the messages exactly as sent)."""
        sessions = self.sessions()
        if sessions is not None:
            sessions.observe_usage(model_id, sent, prompt_tokens, window=window)
            return
        calib = self.calibrations.get(model_id) or Calibration()
        family = token_family(model_id)
        self.calibrations[model_id] = observe_prompt(
            calib, sent, family, prompt_tokens, window=window
        )

    def observe_tokenized(self, model_id: str, text: str, tokens: int) -> None:
        """Learn from a server's exact count of ``text`` (``/tokenize``, no special tokens)."""
        sessions = self.sessions()
        if sessions is not None:
            sessions.observe_tokenized(model_id, text, tokens)
            return
        calib = self.calibrations.get(model_id) or Calibration()
        self.calibrations[model_id] = observe_text(calib, text, token_family(model_id), tokens)

    def status(self) -> dict[str, Any]:
        """The ``routing`` status component."""
        out = self.queue.status()
        if self.sessions() is None:
            out["calibrated_models"] = len(self.calibrations)
        out["summary"] = f"{out['in_flight']} in flight, {out['waiting']} waiting"
        return out
