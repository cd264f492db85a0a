"""routerctl commands for the warm Serena: ``serena status|restart|tools|call``.

The workspace is ``--workspace PATH``, else the current directory (the daemon takes the
configured workspace containing it, else the nearest directory above it holding ``.git``).
``--json`` prints the daemon's result as it came. Like all of routerctl, this module imports
neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import msgspec

from ._sync import typed_result
from .cli import DEFAULT_TIMEOUT, EXIT_ERROR, EXIT_OK, EXIT_USAGE, GROUPS, Context, command, table
from .protocol_serena import (
    SerenaCallResult,
    SerenaRestartResult,
    SerenaStatusResult,
    SerenaToolsResult,
    SerenaWorkspaceStatus,
)

__all__ = ["cmd_serena_call", "cmd_serena_restart", "cmd_serena_status", "cmd_serena_tools",
           "format_serena_status"]

GROUPS["serena"] = "the warm Serena code-intelligence servers"

#: A cold Serena needs a few seconds to start and warm up: wait longer than routerctl's
#: usual default unless --timeout says otherwise.
SERENA_TIMEOUT = 120.0
_DASH = "-"


def _workspace_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", "--workspace", metavar="PATH",
                   help="the project (default: the current directory)")


def _workspace(args: argparse.Namespace) -> str:
    return os.path.abspath(args.workspace or os.getcwd())


def _patient(ctx: Context) -> None:
    if ctx.timeout == DEFAULT_TIMEOUT:
        ctx.timeout = SERENA_TIMEOUT


def _ms(value: Any) -> str:
    return _DASH if value is None else f"{value:.0f} ms"


def format_serena_status(st: SerenaStatusResult) -> str:
    """The text of ``routerctl serena status``."""
    head = (f"Serena {'enabled' if st.enabled else 'disabled'}: {st.running} running "
            f"(at most {st.max_running})")
    if st.leftovers_killed:
        head += f"; killed {st.leftovers_killed} left over by an earlier routerd"
    blocks = [head]
    for w in st.workspaces:
        blocks.append(_workspace_block(w))
    return "\n\n".join(blocks)


def _workspace_block(w: SerenaWorkspaceStatus) -> str:
    lat = w.latency
    kind = "configured" if w.configured else "on demand"
    rows = [
        ("state", w.state + (f" (retry in {w.next_retry_in_s:g}s)"
                             if w.next_retry_in_s is not None else "")),
        ("pid", str(w.pid) if w.pid is not None else _DASH),
        ("uptime", f"{w.uptime_s:.0f}s" if w.uptime_s is not None else _DASH),
        ("restarts", str(w.restarts)),
        ("last error", w.last_error or _DASH),
        ("kind", kind + (", writable" if w.writable else ", read-only")),
        ("tools", str(w.tools)),
        ("warm-up", _ms(w.warmup_ms)),
        ("calls", f"{lat.get('calls', 0)}, last {_ms(lat.get('last_ms'))}, "
                  f"p50 {_ms(lat.get('p50_ms'))}, p95 {_ms(lat.get('p95_ms'))}"),
        ("queued", str(w.queued)),
    ]
    return w.workspace + "\n" + table(rows, indent="  ")


@command("serena status", help="show each warm Serena: state, pid, uptime, restarts, latency",
         arguments=_workspace_argument)
def cmd_serena_status(ctx: Context, args: argparse.Namespace) -> int:
    params = {"workspace": os.path.abspath(args.workspace)} if args.workspace else {}
    with ctx.connect() as client:
        raw = client.call("serena.status", params)
    st = typed_result(raw, SerenaStatusResult, "serena.status")
    ctx.emit(raw, format_serena_status(st))
    return EXIT_OK


def _restart_arguments(p: argparse.ArgumentParser) -> None:
    _workspace_argument(p)
    p.add_argument("--all", action="store_true",
                   help="restart every running Serena (root and the daemon's user only)")


@command("serena restart", help="restart a workspace's Serena now (no backoff)",
         arguments=_restart_arguments)
def cmd_serena_restart(ctx: Context, args: argparse.Namespace) -> int:
    if args.all and args.workspace:
        return ctx.fail("usage", "give --workspace or --all, not both", EXIT_USAGE)
    params = {} if args.all else {"workspace": _workspace(args)}
    with ctx.connect() as client:
        raw = client.call("serena.restart", params)
    res = typed_result(raw, SerenaRestartResult, "serena.restart")
    text = ("restarting Serena for " + ", ".join(res.restarted) if res.restarted
            else "no Serena is running")
    ctx.emit(raw, text)
    return EXIT_OK


@command("serena tools", help="list the Serena tools you may call in a workspace",
         arguments=_workspace_argument)
def cmd_serena_tools(ctx: Context, args: argparse.Namespace) -> int:
    _patient(ctx)
    with ctx.connect() as client:
        raw = client.call("serena.tools", {"workspace": _workspace(args)})
    res = typed_result(raw, SerenaToolsResult, "serena.tools")
    rows = [(t.name + (" (writes)" if t.writes else ""), t.description.split("\n", 1)[0][:70])
            for t in res.tools]
    mode = "read and write" if res.writable else "read-only"
    ctx.emit(raw, f"{res.workspace} ({mode})\n" + table(rows, indent="  "))
    return EXIT_OK


def _call_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tool", metavar="TOOL", help="the tool's name (see routerctl serena tools)")
    p.add_argument("arguments", metavar="JSON_ARGS", nargs="?", default="{}",
                   help='its arguments as a JSON object, e.g. \'{"name_path_pattern": "Foo"}\'')
    _workspace_argument(p)
    p.add_argument("--call-timeout", metavar="SECONDS", type=float, default=None,
                   help="the daemon's limit for this call (default: serena.call_timeout)")


@command("serena call", help="call one Serena tool and print its answer",
         arguments=_call_arguments)
def cmd_serena_call(ctx: Context, args: argparse.Namespace) -> int:
    try:
        arguments = msgspec.json.decode(args.arguments)
    except msgspec.DecodeError as exc:
        return ctx.fail("usage", f"JSON_ARGS is not JSON: {exc}", EXIT_USAGE)
    if not isinstance(arguments, dict):
        return ctx.fail("usage", "JSON_ARGS must be a JSON object ({...})", EXIT_USAGE)
    _patient(ctx)
    params: dict[str, Any] = {"tool": args.tool, "arguments": arguments,
                              "workspace": _workspace(args)}
    if args.call_timeout is not None:
        params["timeout"] = args.call_timeout
    with ctx.connect() as client:
        raw = client.call("serena.call", params)
    res = typed_result(raw, SerenaCallResult, "serena.call")
    text = res.text
    if res.data is not None:
        text = msgspec.json.format(msgspec.json.encode(res.data), indent=2).decode()
    ctx.emit(raw, text)
    return EXIT_ERROR if res.is_error else EXIT_OK
