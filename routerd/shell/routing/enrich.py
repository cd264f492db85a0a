"""What routing adds to a request before planning: Serena's code context and the system
prompt, and what it says about them in the ``selected`` event.

Serena (``routerd.shell.serena``): a request whose ``file_context`` names a file or a symbol
gets Serena-first context when ``serena.priority`` is ``always_first``, or when its category
has ``require_serena`` (``on_demand``). When Serena is disabled, not installed, down or not
ready within its time budget, the request is routed without context and the ``selected``
event says why (``{"used": false, "reason": ...}``); it never fails for Serena's sake.
"""

from __future__ import annotations

from typing import Any, Literal

from routerd.core.config import Config
from routerd.core.context import SerenaState, system_prompt
from routerd.core.serena_context import ContextResult, ContextUnavailable, enrich_query
from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.serena import Client, get_serena
from routerd.shell.serena_pool import SerenaPool
from routerd_client.protocol_route import FileContext

__all__ = [
    "SerenaOutcome",
    "wants_serena",
    "gather_serena",
    "no_file_outcome",
    "names_code",
    "serena_state",
    "bare_system_prompt",
]


class SerenaOutcome:
    """Serena's part in one request: the enriched query (or None) and the event's view."""

    __slots__ = ("info", "query", "state")

    def __init__(self, info: dict[str, Any] | None, query: str | None, state: SerenaState) -> None:
        self.info = info
        self.query = query
        self.state = state


def names_code(fc: FileContext | None) -> bool:
    """The request names a file or a symbol Serena can look up."""
    return fc is not None and bool(fc.file or fc.symbol)


def wants_serena(
    config: Config, fc: FileContext | None, category: str | None
) -> Literal["ask", "say_no_file", "no"]:
    """Whether to ask Serena for this request. ``category`` is only needed (and only
    looked at) when ``serena.priority`` is ``on_demand``; pass None to ask whether it is."""
    required = False
    if category is not None:
        try:
            required = config.task_routing.get(category).require_serena
        except KeyError:
            required = False
    if names_code(fc):
        if config.serena.priority == "always_first" or required:
            return "ask"
        return "no"
    return "say_no_file" if required else "no"


def _state(app: App) -> tuple[SerenaPool | None, SerenaState]:
    pool = get_serena(app)
    if pool is None or not app.config.serena.enabled:
        return pool, "disabled"
    return pool, "unavailable"


def serena_state(app: App) -> SerenaState:
    """What the system prompt says of Serena for a request that got no context from it."""
    return _state(app)[1]


async def gather_serena(
    app: App, conn: ConnectionInfo, fc: FileContext | None, category: str, query: str
) -> SerenaOutcome:
    """Ask Serena for context (see the module docstring); never raises for Serena's sake."""
    pool, state = _state(app)
    if pool is None:
        return SerenaOutcome({"used": False, "reason": "Serena is not part of this daemon"},
                             None, state)  # fmt: skip
    assert fc is not None
    position = (fc.line, fc.character or 0) if fc.line is not None else None
    ctx = await pool.gather_context(
        Client(uid=conn.peer_uid, gid=conn.peer_gid, groups=tuple(conn.peer_groups)),
        workspace=fc.workspace,
        file=fc.file,
        position=position,
        symbol=fc.symbol,
        category=category,
        query=query,
    )
    if isinstance(ctx, ContextUnavailable):
        return SerenaOutcome({"used": False, "reason": ctx.reason}, None, state)
    assert isinstance(ctx, ContextResult)
    info: dict[str, Any] = {
        "used": bool(ctx.text),
        "workspace": ctx.workspace,
        "tokens": ctx.tokens,
        "elapsed_ms": ctx.elapsed_ms,
    }
    if ctx.truncated:
        info["truncated"] = True
    if not ctx.text:
        info["reason"] = "Serena found nothing about that code"
    return SerenaOutcome(info, enrich_query(query, ctx), "ready")


def no_file_outcome(app: App) -> SerenaOutcome:
    """The request's category wants Serena but it names no file or symbol."""
    return SerenaOutcome(
        {"used": False, "reason": "the request names no file or symbol (file_context)"},
        None,
        _state(app)[1],
    )


def bare_system_prompt(os_name: str, conn: ConnectionInfo, serena: SerenaState) -> str:
    """The system prompt put before a bare ``query`` (a client sending ``messages`` brings
    its own): the core's, with the agent the client said it runs under."""
    agent = conn.agent.name if conn.agent is not None else None
    if not agent or agent == "unknown":
        agent = conn.client.name if conn.client is not None else "unknown"
    return system_prompt(os_name, agent, serena)
