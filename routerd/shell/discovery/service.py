"""The discovery task: one probing loop per address, restarted on every configuration reload.

Invariants:

* Every address has its own loop, so a server that hangs delays nobody else's probes, and
  probing never runs in a request's path (requests only read the registry).
* A loop sleeps until its service's ``next_probe_at`` (backoff and jitter are the health
  machine's), or until something wakes it (a hint: a reload, or a real request that suggests
  the server is back).
* All outbound HTTP goes through one client from ``routerd.shell.http.make_http_client``,
  whose egress policy is re-read on every request (so a reload applies at once). An address
  the policy refuses is not probed again until the next reload.
* A bug while probing one address is logged and that address retried later; it never takes
  the daemon down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import httpx
import trio

from routerd import __version__
from routerd.core.config import Config
from routerd.core.egress import EgressPolicy, policy_from_config
from routerd.core.hostenv import HostEnvironment
from routerd.shell.http import make_http_client

from .credentials import load_all_credentials
from .hostenv import find_container_host, read_host_environment
from .monitor import Monitor
from .probe import Prober
from .registry import ServiceRegistry

__all__ = ["Discovery", "ClientFactory"]

log = logging.getLogger("routerd.discovery")

#: Makes the one HTTP client discovery uses; given the current-policy function.
ClientFactory = Callable[[Callable[[], EgressPolicy]], httpx.AsyncClient]


class Discovery:
    """Keeps a :class:`ServiceRegistry` up to date by probing.

    ``config`` returns the configuration in force; ``env`` is the daemon's environment (API
    keys in variables); ``client_factory`` replaces the egress-checked HTTP client (tests pass
    one over ``httpx.MockTransport``); ``host_environment`` replaces reading ``/proc``.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        config: Callable[[], Config],
        env: Mapping[str, str],
        client_factory: ClientFactory | None = None,
        host_environment: HostEnvironment | None = None,
    ) -> None:
        self.registry = registry
        self._config = config
        self._env = env
        self._client_factory = client_factory or _default_client
        self._where = host_environment
        self._policy = policy_from_config(config().security)
        self._reload = trio.Event()

    def on_reload(self, old: Config, new: Config) -> None:
        """Reload hook: re-plan the addresses, re-read keys, and look at every server again."""
        self._reload.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe until cancelled; ``started()`` once the first loops run."""
        async with self._client_factory(lambda: self._policy) as client:
            started = False
            while True:
                prober = await self._configure(client)
                async with trio.open_nursery() as nursery:
                    for m in self.registry.monitors():
                        nursery.start_soon(self._watch, prober, m)
                    if not started:
                        started = True
                        task_status.started()
                    await self._reload.wait()
                    self._reload = trio.Event()
                    nursery.cancel_scope.cancel()

    async def _configure(self, client: httpx.AsyncClient) -> Prober:
        config = self._config()
        self._policy = policy_from_config(config.security)
        credentials = await load_all_credentials(config.services, self._env)
        host: str | None = None
        if config.discovery.container_host:
            if self._where is None:
                self._where = await read_host_environment(self._env)
            host = await find_container_host(self._where, self._policy)
        self.registry.configure(config, credentials, container_host=host)
        return Prober(
            client,
            timeout=config.discovery.probe_timeout,
            own_instance_id=self.registry.instance_id,
        )

    async def _watch(self, prober: Prober, m: Monitor) -> None:
        registry = self.registry
        while True:
            if m.blocked is not None:
                await trio.sleep_forever()  # until a reload restarts the loops
            delay = m.health.next_probe_at - registry.clock()
            if delay > 0:
                with trio.move_on_after(delay):
                    await m.wake.wait()
            m.wake = trio.Event()
            try:
                full = m.full_due(registry.clock(), registry.config.discovery.models_refresh)
                headers = registry.credentials_for(m).headers()
                result = await prober.probe(m.target, m.prior(), headers, full=full)
                registry.apply_probe(m, result)
            except Exception:
                log.exception("probing service %s failed (a bug in routerd)", m.name)
                await trio.sleep(registry.policy.backoff_cap)


def _default_client(policy: Callable[[], EgressPolicy]) -> httpx.AsyncClient:
    return make_http_client(
        policy,
        timeout=10.0,  # each probe passes its own; this only bounds a forgotten one
        headers={"User-Agent": f"routerd/{__version__}"},
    )
