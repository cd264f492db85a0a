"""In WSL or a container, is the host machine reachable as ``host.docker.internal``?

Invariants:

* Each file is read once per call (the seed read ``/proc/1/cgroup`` twice in one ``or``).
* The name is only looked up when the egress policy allows it: a DNS query for a name
  outside ``security.allowed_hosts`` could itself leak. It is used only if it resolves and
  every address it resolves to is allowed (``routerd.core.egress.check_resolved``).
* Loopback is always probed as well; this only adds the host's twin of each address.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import trio

from routerd.core.egress import EgressPolicy, check_host, check_resolved
from routerd.core.hostenv import HostEnvironment, detect
from routerd.core.targets import CONTAINER_HOST_NAME
from routerd.shell.logs import event

__all__ = ["read_host_environment", "find_container_host"]

log = logging.getLogger("routerd.discovery")

RESOLVE_TIMEOUT = 2.0


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(65536)
    except OSError:
        return None


def _read_all(env: Mapping[str, str]) -> HostEnvironment:
    return detect(
        proc_version=_read("/proc/version"),
        osrelease=_read("/proc/sys/kernel/osrelease"),
        cgroup=_read("/proc/1/cgroup"),
        dockerenv=os.path.exists("/.dockerenv"),
        containerenv=os.path.exists("/run/.containerenv"),
        env=env,
    )


async def read_host_environment(env: Mapping[str, str]) -> HostEnvironment:
    """Where routerd runs (read in a worker thread; /proc reads are quick, but files)."""
    return await trio.to_thread.run_sync(_read_all, env)


async def find_container_host(
    where: HostEnvironment, policy: EgressPolicy, *, name: str = CONTAINER_HOST_NAME
) -> str | None:
    """``name`` if routerd runs in WSL or a container and ``name`` is usable, else None."""
    if not where.host_is_elsewhere:
        return None
    verdict = check_host(policy, name)
    if not verdict.allowed:
        log.info(
            "running in %s (%s); servers on the host are not probed: %s is not in "
            "security.allowed_hosts",
            "WSL" if where.wsl else "a container", where.reason, name,
            extra=event("container_host", host=name, used=False),
        )  # fmt: skip
        return None
    addresses: list[str] = []
    with trio.move_on_after(RESOLVE_TIMEOUT):
        try:
            infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.debug("%s does not resolve (%s); probing loopback only", name, exc)
            return None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        log.debug("%s did not resolve in time; probing loopback only", name)
        return None
    verdict = check_resolved(policy, name, addresses)
    if not verdict.allowed:
        log.info(
            "%s resolves, but is not probed: %s", name, verdict.reason,
            extra=event("container_host", host=name, used=False),
        )  # fmt: skip
        return None
    log.info(
        "running in %s; also probing the host at %s (%s)",
        "WSL" if where.wsl else "a container", name, ", ".join(addresses),
        extra=event("container_host", host=name, used=True),
    )  # fmt: skip
    return name
