"""``routerd-mcp``: serve routerd's tools to a coding agent over MCP (stdio).

The agent starts it and speaks MCP on its stdin and stdout; logs go to stderr. It does not
need the daemon to be up when it starts: each tool call connects (again) if needed, and
says so in its result when the daemon cannot be reached.

Exit codes: 0 when the agent closes stdin, 2 for a bad command line, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from routerd import __version__
from routerd_client import default_socket_path

from .server import BridgeOptions, default_workspace, serve

__all__ = ["main", "parse_options"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerd-mcp",
        description="MCP server (stdio) that offers routerd to coding agents: ask a local "
        "model, classify, status, models, and Serena's code-intelligence tools.",
    )
    p.add_argument(
        "--socket", metavar="PATH",
        help="routerd's socket; default: $ROUTERD_SOCKET, "
        "$XDG_RUNTIME_DIR/routerd/routerd.sock, /run/routerd/routerd.sock",
    )  # fmt: skip
    p.add_argument(
        "--workspace", metavar="DIR",
        help="the project for Serena's tools and relative file paths (default: the current "
        "directory, where agents start MCP servers)",
    )  # fmt: skip
    p.add_argument(
        "--session", choices=("auto", "none"), default="auto",
        help="auto: asks continue one conversation kept by routerd (default); none: each ask "
        "stands alone unless it names a session",
    )  # fmt: skip
    p.add_argument("--no-serena", action="store_true", help="offer no Serena tools")
    p.add_argument(
        "--serena-wait", metavar="SECONDS", type=float, default=10.0,
        help="how long listing tools waits for Serena's tool list while Serena warms up "
        "(default 10)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=10.0,
        help="connecting to routerd and quick calls (default 10); asks and Serena calls are "
        "bounded by routerd's own limits",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (to stderr)")
    p.add_argument("--version", action="version", version=f"routerd-mcp {__version__}")
    return p


def parse_options(argv: Sequence[str] | None = None) -> tuple[BridgeOptions, int]:
    """The options from the command line, and the log level. Exits 2 on a bad one."""
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.serena_wait < 0 or ns.timeout <= 0:
        parser.error("--serena-wait must be >= 0 and --timeout > 0")
    workspace = os.path.realpath(ns.workspace) if ns.workspace else default_workspace()
    options = BridgeOptions(
        socket=ns.socket or default_socket_path(),
        workspace=workspace,
        session=ns.session,
        serena=not ns.no_serena,
        serena_wait=ns.serena_wait,
        timeout=ns.timeout,
    )
    level = (
        logging.WARNING if ns.verbose == 0 else logging.INFO if ns.verbose == 1 else (logging.DEBUG)
    )
    return options, level


def main(argv: Sequence[str] | None = None) -> int:
    options, level = parse_options(argv)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="routerd-mcp: %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(serve, options)
    except KeyboardInterrupt:
        return 130
    return 0
