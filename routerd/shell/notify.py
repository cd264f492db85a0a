"""sd_notify: tell systemd the daemon is ready, reloading or stopping.

A no-op when ``NOTIFY_SOCKET`` is unset (not run by systemd with ``Type=notify``) or when
systemd-python is not installed; never raises.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

__all__ = ["notify", "monotonic_usec"]

log = logging.getLogger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``MONOTONIC_USEC=`` wants with ``RELOADING=1``."""
    if sys.platform == "win32":  # no systemd to tell, but reload still calls this
        return time.monotonic_ns() // 1000
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notify(*states: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one notification.

    ``env`` is the daemon's environment (default: the process's); nothing is sent unless it
    has ``NOTIFY_SOCKET``. Returns True if systemd-python reported the message sent.
    """
    env = os.environ if env is None else env
    if not env.get("NOTIFY_SOCKET") or not states:
        return False
    try:
        # Imported lazily: optional, and only needed under systemd.
        import systemd.daemon as sd_daemon
    except ImportError:
        log.debug("systemd-python is not installed; not sending %s", states)
        return False
    try:
        return bool(sd_daemon.notify("\n".join(states)))
    except (OSError, ValueError) as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
