"""The MCP server: tool calls in, socket requests to routerd out.

Contract:

* Every tool call is one request to the daemon over the socket (``route``, ``classify``,
  ``status``, ``models.list``, ``serena.tools``, ``serena.call``); the bridge holds no state
  but the connection, the session it continues and a cache of Serena's tool list.
* The daemon's errors, an unreachable daemon and bad arguments become tool results with
  ``isError`` (see :mod:`.tools`); the server itself stays up. Only an unknown tool name is
  an MCP protocol error (``invalid params``), as the MCP spec asks.
* ``ask`` streams ``route``: with a progress token, each ``selected`` and ``chunk`` event is
  sent on as an MCP progress notification. A cancelled tool call cancels the daemon's request.
* Sessions: ``ask`` without ``session`` continues the bridge's own conversation (the session
  of the last ask that had one; the first starts a new one), unless the bridge was started
  with ``--session none``.
* Serena's tools (``serena.tools`` for the bridge's workspace) are listed as
  ``serena_<name>``; the list is fetched in the background at the first ``tools/list``, which
  waits for it at most ``serena_wait`` seconds (Serena may still be warming up), and kept
  for a minute.

The SDK is anyio-based; it runs here on trio, the daemon client's library.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import trio
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    Tool,
)

from routerd import __version__
from routerd_client import (
    AgentInfo,
    ConnectionLost,
    DaemonUnreachable,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    detect_agent,
)

from .link import DaemonLink
from .tools import (
    SERENA_PREFIX,
    STATIC_TOOLS,
    AskArgs,
    ClassifyArgs,
    ModelsArgs,
    SerenaCallArgs,
    SerenaToolsArgs,
    StatusArgs,
    ask_result,
    data_result,
    decode_args,
    error_result,
    serena_result,
    serena_tool,
)

__all__ = ["Bridge", "BridgeOptions", "build_server", "serve"]

log = logging.getLogger("routerd.mcp")

#: Seconds a fetched Serena tool list is used before it is fetched again; after a failure,
#: seconds before the next try.
SERENA_LIST_TTL: Final = 60.0
SERENA_RETRY_AFTER: Final = 5.0

INSTRUCTIONS: Final = (
    "routerd routes coding requests to local language models on this machine or network "
    "(nothing leaves it). Use `ask` to get an answer from a local model (it picks the model; "
    "follow-up asks keep the conversation), `models` and `status` to see what is available, "
    "and the serena_* tools for code intelligence on the workspace (symbols, references)."
)


@dataclass(frozen=True)
class BridgeOptions:
    """How the bridge runs. ``workspace``: the project for Serena and relative file paths
    (absolute). ``session``: ``auto`` (asks continue one conversation) or ``none``.
    ``serena``: offer Serena's tools. ``timeout``: seconds for connecting and quick calls."""

    socket: str
    workspace: str
    session: str = "auto"
    serena: bool = True
    serena_wait: float = 10.0
    timeout: float = 10.0


class _SerenaList:
    """One fetch of Serena's tools: ``tools`` once it succeeded, ``error`` if it failed."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.tools: list[Tool] | None = None
        self.error: str | None = None
        self.finished_at = 0.0

    def fresh(self, now: float) -> bool:
        if not self.done.is_set():
            return True
        ttl = SERENA_LIST_TTL if self.tools is not None else SERENA_RETRY_AFTER
        return now - self.finished_at < ttl


Handler = Callable[[ServerRequestContext[Any], dict[str, Any] | None], Awaitable[CallToolResult]]


class Bridge:
    """The tool handlers, over one :class:`DaemonLink`. ``nursery`` runs background work
    (the connection, Serena's tool list)."""

    def __init__(self, options: BridgeOptions, nursery: trio.Nursery) -> None:
        self.options = options
        self.session_id: str | None = None  # the conversation `ask` continues
        self.mcp_client: tuple[str, str | None] | None = None  # the agent's name and version
        self.link = DaemonLink(nursery, options.socket, timeout=options.timeout,
                               agent=self._agent)  # fmt: skip
        self._nursery = nursery
        self._serena: _SerenaList | None = None
        self._handlers: dict[str, Handler] = {
            "ask": self.ask,
            "classify": self.classify,
            "status": self.status,
            "models": self.models,
            "serena_tools": self.serena_tools,
            "serena_call": self.serena_call,
        }

    def _agent(self) -> AgentInfo:
        """The coding agent for ``hello``: from the environment, else the MCP client's name."""
        found = detect_agent()
        if found.name != "unknown" or self.mcp_client is None:
            return found
        name, version = self.mcp_client
        agent = detect_agent({"MCP_CLIENT": name}, ppid_comm="")
        return msgspec.structs.replace(agent, version=version)

    def _note_client(self, ctx: ServerRequestContext[Any]) -> None:
        params = ctx.session.client_params
        if self.mcp_client is None and params is not None:
            info = params.client_info
            self.mcp_client = (info.name, info.version or None)

    # --- MCP handlers -----------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        self._note_client(ctx)
        tools = [spec.tool() for spec in STATIC_TOOLS]
        taken = {t.name for t in tools}
        tools.extend(t for t in await self._serena_tool_list() if t.name not in taken)
        return ListToolsResult(tools=tools)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        self._note_client(ctx)
        name, arguments = params.name, params.arguments
        handler = self._handlers.get(name)
        serena = name.startswith(SERENA_PREFIX) and self.options.serena
        if handler is None and not serena:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown tool {name!r}")
        try:
            if handler is not None:
                return await handler(ctx, arguments)
            # serena_<tool>: Serena's own tool, in the bridge's workspace.
            tool = name.removeprefix(SERENA_PREFIX)
            return await self._serena_run(tool, arguments or {}, None, None, None)
        except msgspec.ValidationError as exc:
            return error_result("bad_arguments", f"{name}: {exc}")
        except RemoteError as exc:
            return error_result(exc.code, exc.message, exc.data)
        except DaemonUnreachable as exc:
            return error_result(
                "unreachable",
                f"{exc}. Start routerd (`routerd`, or `systemctl --user start routerd`) or "
                "point routerd-mcp at its socket with --socket.",
            )
        except ConnectionLost as exc:
            self.link.close()
            return error_result("connection_lost", f"{exc}; the next call connects again")
        except RequestTimeout as exc:
            return error_result("timeout", str(exc))
        except ProtocolViolation as exc:
            self.link.close()
            return error_result("protocol", str(exc))

    # --- tools -----------------------------------------------------------------------------

    async def ask(self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None) -> (
            CallToolResult):  # fmt: skip
        args: AskArgs = decode_args(AskArgs, arguments)
        params = self._route_params(args)
        token = (ctx.meta or {}).get("progress_token")
        client = await self.link.client()
        text: list[str] = []
        reasoning: list[str] = []
        selected: dict[str, Any] | None = None
        notes = 0  # progress notifications sent: MCP wants the progress value to grow
        # No client-side time limit: the daemon bounds the wait (routing.timeouts).
        async with client.stream("route", params, timeout=None) as events:
            async for event in events:
                data = event.data if isinstance(event.data, dict) else {}
                if event.event == "selected":
                    selected = data
                    message = (f"asking {data.get('model')} on {data.get('service')} "
                               f"({data.get('category')})")  # fmt: skip
                elif event.event == "chunk":
                    text.append(str(data.get("text", "")))
                    message = text[-1]
                elif event.event == "reasoning":
                    reasoning.append(str(data.get("text", "")))
                    continue
                else:
                    continue
                if token is not None:
                    notes += 1
                    await ctx.session.send_progress_notification(
                        token, float(notes), message=message,
                        related_request_id=ctx.request_id,  # type: ignore[arg-type]
                    )  # fmt: skip
            end = events.end_data if isinstance(events.end_data, dict) else {}
        if self.options.session == "auto" and args.session != "none" and end.get("session_id"):
            self.session_id = end["session_id"]
        return ask_result("".join(text), end, selected, "".join(reasoning))

    def _route_params(self, args: AskArgs) -> dict[str, Any]:
        """``route``'s params for an ``ask``: the session to continue, and the file context
        with the bridge's workspace filled in."""
        params: dict[str, Any] = {"query": args.query}
        for name in ("category", "model", "max_tokens", "temperature"):
            value = getattr(args, name)
            if value is not msgspec.UNSET:
                params[name] = value
        session = args.session
        if session is msgspec.UNSET:
            if self.options.session == "auto":
                params["session_id"] = self.session_id or "new"
        elif session != "none":
            params["session_id"] = session
        context = {
            name: getattr(args, name)
            for name in ("file", "line", "character", "symbol", "workspace")
            if getattr(args, name) is not msgspec.UNSET
        }
        if "file" in context or "symbol" in context:
            context["workspace"] = self._workspace(context.get("workspace"))
            params["file_context"] = context
        return params

    async def classify(self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None) -> (
            CallToolResult):  # fmt: skip
        args = decode_args(ClassifyArgs, arguments)
        return data_result(await self.link.call("classify", msgspec.to_builtins(args)))

    async def status(self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None) -> (
            CallToolResult):  # fmt: skip
        decode_args(StatusArgs, arguments)
        return data_result(await self.link.call("status"))

    async def models(self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None) -> (
            CallToolResult):  # fmt: skip
        args = decode_args(ModelsArgs, arguments)
        return data_result(await self.link.call("models.list", msgspec.to_builtins(args)))

    async def serena_tools(
        self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None
    ) -> CallToolResult:
        args = decode_args(SerenaToolsArgs, arguments)
        workspace = self._workspace(None if args.workspace is msgspec.UNSET else args.workspace)
        # serena.tools waits for Serena to warm up; the daemon bounds that (start_timeout).
        return data_result(
            await self.link.call("serena.tools", {"workspace": workspace}, timeout=None)
        )

    async def serena_call(
        self, ctx: ServerRequestContext[Any], arguments: dict[str, Any] | None
    ) -> CallToolResult:
        args = decode_args(SerenaCallArgs, arguments)

        def opt(value: Any) -> Any:
            return None if value is msgspec.UNSET else value

        return await self._serena_run(
            args.tool, args.arguments, opt(args.workspace), opt(args.file), opt(args.timeout)
        )

    async def _serena_run(
        self, tool: str, arguments: dict[str, Any], workspace: str | None, file: str | None,
        timeout: float | None,
    ) -> CallToolResult:  # fmt: skip
        params: dict[str, Any] = {"tool": tool, "arguments": arguments}
        if file is not None:
            params["file"] = file
        # An absolute file alone lets the daemon find its project; otherwise the workspace
        # (the bridge's unless the agent named one) is what a relative file is relative to.
        if workspace is not None or file is None or not os.path.isabs(file):
            params["workspace"] = self._workspace(workspace)
        if timeout is not None:
            params["timeout"] = timeout
        result = await self.link.call("serena.call", params, timeout=None)
        return serena_result(result if isinstance(result, dict) else {})

    def _workspace(self, given: str | None) -> str:
        """A workspace the agent named (relative: to the bridge's), else the bridge's. The
        daemon wants absolute paths."""
        if given is None:
            return self.options.workspace
        return os.path.normpath(os.path.join(self.options.workspace, os.path.expanduser(given)))

    # --- Serena's tool list -----------------------------------------------------------------

    async def _serena_tool_list(self) -> list[Tool]:
        if not self.options.serena:
            return []
        current = self._serena
        if current is None or not current.fresh(trio.current_time()):
            current = self._serena = _SerenaList()
            self._nursery.start_soon(self._fetch_serena_tools, current)
        with trio.move_on_after(self.options.serena_wait):
            await current.done.wait()
        return current.tools or []

    async def _fetch_serena_tools(self, into: _SerenaList) -> None:
        workspace = self.options.workspace
        try:
            result = await self.link.call("serena.tools", {"workspace": workspace}, timeout=None)
            infos = result.get("tools", []) if isinstance(result, dict) else []
            into.tools = [serena_tool(info, result.get("workspace", workspace))
                          for info in infos if isinstance(info, dict) and info.get("name")]  # fmt: skip
            log.info("Serena offers %d tools in %s", len(into.tools), workspace)
        except (RemoteError, DaemonUnreachable, ConnectionLost, RequestTimeout,
                ProtocolViolation) as exc:  # fmt: skip
            into.error = str(exc)
            log.info("Serena's tools are not listed: %s", exc)
        finally:
            into.finished_at = trio.current_time()
            into.done.set()


def build_server(bridge: Bridge) -> Server[Any]:
    """The MCP server whose tools are ``bridge``'s."""
    return Server(
        "routerd",
        version=__version__,
        title="routerd: local model router",
        instructions=INSTRUCTIONS,
        on_list_tools=bridge.list_tools,
        on_call_tool=bridge.call_tool,
    )


async def serve(options: BridgeOptions) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    async with trio.open_nursery() as nursery:
        bridge = Bridge(options, nursery)
        server = build_server(bridge)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        bridge.link.close()
        nursery.cancel_scope.cancel()


def default_workspace() -> str:
    """The directory routerd-mcp was started in: agents start MCP servers in the project."""
    return os.path.realpath(os.getcwd())
