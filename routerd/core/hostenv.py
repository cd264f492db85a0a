"""Is routerd running in WSL or in a container? Decided from file contents passed in.

The seed read ``/proc/1/cgroup`` twice inside one ``or`` (the second read saw an empty
string, so ``kubepods`` was never found). Here the shell reads each file once and hands the
text over; this module only decides.

Invariants:

* Pure: no file, environment or clock access; ``None`` means "that file could not be read".
* WSL: ``microsoft`` or ``wsl`` in ``/proc/version`` or ``osrelease``, or the variables WSL
  sets (``WSL_DISTRO_NAME``, ``WSL_INTEROP``).
* Container: ``/.dockerenv`` or ``/run/.containerenv`` exists, the ``container`` variable
  (podman, systemd-nspawn) or ``KUBERNETES_SERVICE_HOST`` is set, or PID 1's cgroup names a
  container runtime. A cgroup v2 host shows only ``0::/``, which proves nothing either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import msgspec

__all__ = ["HostEnvironment", "is_wsl", "is_container", "detect"]

_WSL: Final = re.compile(r"microsoft|\bwsl", re.IGNORECASE)
_CGROUP_RUNTIMES: Final = re.compile(r"docker|kubepods|containerd|libpod|lxc|garden|/ecs/")


class HostEnvironment(msgspec.Struct, frozen=True):
    """Where the daemon runs. ``reason`` says what gave it away (empty on a plain host)."""

    wsl: bool = False
    container: bool = False
    reason: str = ""

    @property
    def host_is_elsewhere(self) -> bool:
        """Model servers may run on a host this machine reaches by name, not by loopback."""
        return self.wsl or self.container


def is_wsl(
    proc_version: str | None, osrelease: str | None, env: Mapping[str, str]
) -> str | None:
    """Why this looks like WSL, or ``None``."""
    for name in ("WSL_DISTRO_NAME", "WSL_INTEROP"):
        if env.get(name):
            return f"${name} is set"
    for path, text in (("/proc/version", proc_version), ("osrelease", osrelease)):
        if text and _WSL.search(text):
            return f"{path} names Microsoft's kernel"
    return None


def is_container(
    *,
    dockerenv: bool,
    containerenv: bool,
    cgroup: str | None,
    env: Mapping[str, str],
) -> str | None:
    """Why this looks like a container, or ``None``."""
    if dockerenv:
        return "/.dockerenv exists"
    if containerenv:
        return "/run/.containerenv exists"
    if env.get("container"):
        return f"$container is {env['container']!r}"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "$KUBERNETES_SERVICE_HOST is set"
    if cgroup:
        found = _CGROUP_RUNTIMES.search(cgroup)
        if found:
            return f"PID 1's cgroup names {found.group(0).strip('/')}"
    return None


def detect(
    *,
    proc_version: str | None,
    osrelease: str | None,
    cgroup: str | None,
    dockerenv: bool,
    containerenv: bool,
    env: Mapping[str, str],
) -> HostEnvironment:
    """Both answers at once, with the first reason found."""
    wsl = is_wsl(proc_version, osrelease, env)
    container = is_container(
        dockerenv=dockerenv, containerenv=containerenv, cgroup=cgroup, env=env
    )
    reasons = [r for r in (wsl, container) if r]
    return HostEnvironment(wsl=wsl is not None, container=container is not None,
                           reason="; ".join(reasons))
