"""routerd's HTTP fronts: an OpenAI-compatible and an Ollama-compatible API, plus
``/metrics``, for tools that speak HTTP rather than routerd's socket protocol.

Public surface:

* :func:`install` plugs the fronts into an :class:`~routerd.shell.app.App` (after routing):
  the ``http`` service (before READY, idle unless ``http.enabled``), the ``http`` status
  component and the reload hook (tokens and guard settings).
* :func:`front_of` returns an app's :class:`HttpFront` (``listening`` lists its addresses).

The pure parts are in ``routerd.core.fronts``; modules here: ``front`` (hypercorn, the guard,
dispatch), ``asgi`` (requests and replies), ``engine`` (routing, listings, passthrough),
``openai_routes``, ``ollama_routes`` and ``tokens``. See docs/configuration.md ("http") and
docs/operations.md ("HTTP fronts").
"""

from __future__ import annotations

import weakref

from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.prometheus import metrics_response

from .asgi import HttpRequest, Reply
from .front import Handler, HttpFront
from .ollama_routes import OLLAMA_ROUTES
from .openai_routes import OPENAI_PREFIXES, OPENAI_ROUTES

__all__ = ["install", "front_of", "HttpFront"]

_FRONTS: weakref.WeakKeyDictionary[App, HttpFront] = weakref.WeakKeyDictionary()


async def _metrics(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    try:
        body, content_type = metrics_response(front.app, req.header("accept"))
    except LookupError:  # the stats feature is not part of this daemon
        await reply.whole(404, b"no metrics: the stats feature is not installed\n", "text/plain")
        return
    await reply.whole(200, body, content_type)


ROUTES: dict[tuple[str, str], Handler] = {
    **OPENAI_ROUTES,
    **OLLAMA_ROUTES,
    ("GET", "/metrics"): _metrics,
}


def install(app: App) -> None:
    """Add the HTTP fronts to ``app``. Routing must be installed first (the fronts route
    through it); requests get ``unavailable`` otherwise."""
    front = HttpFront(app, ROUTES, OPENAI_PREFIXES)
    _FRONTS[app] = front
    app.add_component("http", front.status)
    app.add_reload_hook(front.on_reload)
    # Before READY: "ready" means every configured front accepts connections.
    app.add_service("http", front.run, before_ready=True)
    app.add_drain(front.drain)


def front_of(app: App) -> HttpFront:
    """The front :func:`install` gave ``app``; raises LookupError if none."""
    try:
        return _FRONTS[app]
    except KeyError:
        raise LookupError("the HTTP fronts are not installed in this app") from None
