"""Where each feature plugs into the daemon.

A feature is a function ``install(app)`` that registers its methods on ``app.registry``, its
long-lived tasks with ``app.add_service``, its status with ``app.add_component`` and its
reaction to reloads with ``app.add_reload_hook``. The daemon calls every installer in
:data:`FEATURES` order before it starts serving; add one line here per feature.
"""

from __future__ import annotations

from collections.abc import Callable

from routerd.shell.app import App

Feature = Callable[[App], None]

#: Installers, in the order they run.
FEATURES: list[Feature] = []


def install_features(app: App, features: list[Feature] | None = None) -> None:
    """Install ``features`` (default: :data:`FEATURES`) into ``app``."""
    for install in FEATURES if features is None else features:
        install(app)
