"""Running under systemd: the watchdog and the ``STATUS=`` line.

``READY=1``, ``RELOADING=1`` and ``STOPPING=1`` are sent by :class:`~routerd.shell.app.App` at
the moments they describe; this feature adds what runs for the daemon's whole life:

* the watchdog: a task in the daemon's own trio loop sends ``WATCHDOG=1`` every half
  ``WATCHDOG_USEC``. It runs nowhere else (no thread), so a loop wedged by a blocking call stops
  the pings and systemd restarts the daemon (``Restart=on-failure``);
* the status line: every :data:`STATUS_REFRESH` seconds the components' summaries become one
  ``STATUS=`` line ("3/10 servers online, Serena warm"), sent only when it changed.

Both are installed only when ``NOTIFY_SOCKET`` is set, so nothing runs outside systemd.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping

import trio

from routerd.core.service_manager import status_line, watchdog_interval

from .app import App
from .notify import notify

__all__ = ["STATUS_REFRESH", "install", "run_watchdog", "run_status"]

log = logging.getLogger(__name__)

#: Seconds between looks at the components for a new ``STATUS=`` line.
STATUS_REFRESH = 3.0

Send = Callable[..., bool]


async def run_watchdog(
    interval: float,
    env: Mapping[str, str],
    *,
    send: Send = notify,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``WATCHDOG=1`` now and then every ``interval`` seconds, until cancelled."""
    log.info("systemd watchdog on: pinging every %.3g s", interval)
    task_status.started()
    while True:
        send("WATCHDOG=1", env=env)
        await trio.sleep(interval)


async def run_status(
    app: App,
    env: Mapping[str, str],
    *,
    interval: float = STATUS_REFRESH,
    send: Send = notify,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep systemd's ``STATUS=`` in step with the components' summaries, until cancelled."""
    task_status.started()
    # App.run's READY=1 carried "serving on <socket>"; send only what differs from it.
    last = status_line({}, socket_path=app.socket_path)
    while True:
        line = status_line(app.component_status(), socket_path=app.socket_path)
        if line != last:
            send(f"STATUS={line}", env=env)
            last = line
        await trio.sleep(interval)


def install(app: App) -> None:
    """Add the watchdog (before READY) and the status line (after) when systemd runs us."""
    env = app.env
    if not env.get("NOTIFY_SOCKET"):
        return
    interval = watchdog_interval(env, os.getpid())
    if interval is not None:
        app.add_service("watchdog", functools.partial(run_watchdog, interval, env))
    app.add_service("systemd-status", functools.partial(run_status, app, env), before_ready=False)
