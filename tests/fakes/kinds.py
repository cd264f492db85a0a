"""The table of fake kinds: which paths each answers and how it refuses, fails and loads.

Each kind module registers one ``KindSpec`` with ``register``; ``servers.start_fake`` looks
kinds up here. Kind names are ``routerd.core.services.ServiceKind`` values, plus ``foreign``
(a web dev server) and ``routerd`` (another routerd's HTTP front).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fakes.headers import uvicorn_headers
from fakes.http import Exchange, Headers, Request
from fakes.state import FakeModel, FakeServer, Route
from fakes.wire import compact

__all__ = ["KindSpec", "KINDS", "register", "spec", "json_answer", "json_route", "html_page"]


@dataclass(frozen=True)
class KindSpec:
    """One kind of fake server.

    ``routes`` maps ``(method, path)`` to a handler; anything else gets ``not_found``.
    ``public_paths`` answer without an API key (and in the ``unauthorized`` state).
    ``loading_everywhere`` answers every request while ``state == "loading"`` (llama-server's
    503); kinds without it hold generations until ready instead.
    """

    name: str
    routes: Mapping[tuple[str, str], Route]
    not_found: Route
    unauthorized: Route
    server_error: Route
    default_models: Callable[[], list[FakeModel]]
    version: str = ""
    public_paths: frozenset[str] = frozenset()
    loading_everywhere: Route | None = None
    default_api_key: str | None = None
    description: str = ""


KINDS: dict[str, KindSpec] = {}


def register(kind: KindSpec) -> KindSpec:
    KINDS[kind.name] = kind
    return kind


def spec(name: str) -> KindSpec:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown fake kind {name!r}; known: {sorted(KINDS)}") from None


def json_answer(
    headers: Callable[[FakeServer, Request, int, int], Headers],
    status: int,
    body: bytes,
) -> Route:
    """A route answering ``status`` and ``body`` with the kind's JSON headers."""

    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await ex.respond(status, headers(fake, request, status, len(body)), body)

    return route


def json_route(value: Any, headers: Callable[..., Headers] = uvicorn_headers) -> Route:
    """A route answering 200 with ``value`` (or ``value(fake)``) as compact JSON."""

    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        body = compact(value(fake) if callable(value) else value)
        await ex.respond(200, headers(fake, request, 200, len(body)), body)

    return route


def html_page(title: str) -> bytes:
    """A minimal single-page-app ``index.html``."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8" />\n'
        f'<title>{title}</title>\n</head>\n<body>\n<div id="app"></div>\n</body>\n</html>\n'
    ).encode()
