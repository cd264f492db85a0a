"""routerd-mcp: an MCP server (stdio) that offers routerd to coding agents as tools.

It is a client of the daemon like any other: it speaks to it only over the socket, with
:class:`routerd_client.AsyncClient`. Tools: ``ask`` (a routed request, continuing a session),
``classify``, ``status``, ``models``, ``serena_tools``, ``serena_call`` and each of the warm
Serena's tools as ``serena_<name>``. Run it as ``routerd-mcp`` or ``python -m
routerd.mcp_bridge``; docs/operations.md shows how to configure an agent to start it.

Modules: :mod:`.cli` (the command line), :mod:`.server` (the MCP handlers), :mod:`.tools`
(tool schemas and results, no I/O), :mod:`.link` (the connection to the daemon).
"""

from __future__ import annotations

from .cli import main
from .server import Bridge, BridgeOptions, build_server, serve

__all__ = ["Bridge", "BridgeOptions", "build_server", "main", "serve"]
