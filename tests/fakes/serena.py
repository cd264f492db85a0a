"""A fake Serena: an in-process MCP server (built with the ``mcp`` SDK) with Serena 2.1's tool
names and answer formats, behind a launcher the supervisor uses like the real one.

    fake = FakeSerena()
    launcher = FakeLauncher(fake)       # pass to the supervisor or pool instead of Serena's
    fake.tool_delay = 0.5               # every tool takes this long (virtual time is fine)
    fake.freeze()                       # nothing gets through any more: pings and calls hang
    fake.thaw()                         # ... until this
    fake.crash()                        # the running "process" dies: calls fail at once
    fake.fail_starts = 2                # the next two launches die before the handshake

Answers describe ``tests/data/serena_project`` (``geometry/shapes.py``: Circle, Square,
total_area). Every tool is async, so trio's MockClock(autojump_threshold=0) can be used: all
waits are on trio primitives (anyio runs on trio).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import trio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.message import SessionMessage
from mcp_types import ToolAnnotations

from routerd.shell.serena_mcp import LaunchSpec

SHAPES = "geometry/shapes.py"
_SYMBOLS = {
    "Circle": {
        "name_path": "Circle",
        "kind": "Class",
        "relative_path": SHAPES,
        "body_location": {"start_line": 5, "end_line": 12},
        "info": "class Circle(radius: float)\n---\nA circle of a given radius.",
    },
    "area": {
        "name_path": "Circle/area",
        "kind": "Method",
        "relative_path": SHAPES,
        "body_location": {"start_line": 11, "end_line": 12},
        "info": "def area(self) -> float",
    },
    "total_area": {
        "name_path": "total_area",
        "kind": "Function",
        "relative_path": SHAPES,
        "body_location": {"start_line": 25, "end_line": 27},
        "info": "def total_area(shapes: list[Circle | Square]) -> float",
    },
}
_LINES = {
    (SHAPES, 5): "class Circle:",
    (SHAPES, 11): "    def area(self) -> float:",
    (SHAPES, 12): "        return math.pi * self.radius**2",
    (SHAPES, 27): "    return sum(shape.area() for shape in shapes)",
}


@dataclass
class FakeSerena:
    """The behaviour of every process the :class:`FakeLauncher` starts."""

    tool_delay: float = 0.0
    fail_starts: int = 0
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    launches: int = 0
    specs: list[LaunchSpec] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    links: list[FakeLink] = field(default_factory=list)

    _thawed: trio.Event | None = None
    _launched: trio.Event = field(default_factory=trio.Event)

    async def wait_launches(self, n: int) -> None:
        """Wait until :attr:`launches` reaches ``n``."""
        while self.launches < n:
            await self._launched.wait()

    def freeze(self) -> None:
        """Messages stop flowing both ways (a hung process) until :meth:`thaw`."""
        if self._thawed is None:
            self._thawed = trio.Event()

    def thaw(self) -> None:
        if self._thawed is not None:
            self._thawed.set()
            self._thawed = None

    async def wait_thawed(self) -> None:
        while self._thawed is not None:
            await self._thawed.wait()

    @property
    def link(self) -> FakeLink:
        return self.links[-1]

    def crash(self) -> None:
        """The current process dies."""
        self.link.kill()

    def server(self) -> MCPServer:
        srv: MCPServer = MCPServer(name="Serena", version="2.1.0")
        ro = ToolAnnotations(read_only_hint=True)
        rw = ToolAnnotations(read_only_hint=False, destructive_hint=True)

        async def work(name: str, args: dict[str, Any]) -> None:
            self.calls.append((name, args))
            if self.tool_delay:
                await anyio.sleep(self.tool_delay)

        async def find_symbol(
            name_path_pattern: str,
            relative_path: str = "",
            include_info: bool = False,
            depth: int = 0,
            max_answer_chars: int = -1,
        ) -> str:
            await work(
                "find_symbol",
                {"name_path_pattern": name_path_pattern, "relative_path": relative_path},
            )
            if (
                relative_path
                and relative_path != SHAPES
                and not relative_path.startswith("geometry")
            ):
                raise ToolError("Error executing tool find_symbol: FileNotFoundError: File or "
                                f"directory not found: {relative_path}")
            hit = _SYMBOLS.get(name_path_pattern.split("/")[-1])
            if hit is None:
                return "[]"
            out = dict(hit)
            if not include_info:
                out.pop("info")
            return json.dumps([out])

        async def find_referencing_symbols(
            name_path: str, relative_path: str, max_answer_chars: int = -1
        ) -> str:
            await work(
                "find_referencing_symbols", {"name_path": name_path, "relative_path": relative_path}
            )
            return json.dumps(
                {
                    "geometry/report.py": {
                        "Function": [
                            {
                                "name_path": "report",
                                "body_location": {"start_line": 5, "end_line": 7},
                                "content_around_reference": "...   5:def report() -> str:\n  >   6:    shapes = [Circle(1.0)]\n",
                            },
                            {
                                "name_path": "biggest_circle",
                                "body_location": {"start_line": 10, "end_line": 11},
                                "content_around_reference": "  >  11:    return Circle(max(radii))\n",
                            },
                        ]
                    },
                    SHAPES: {
                        "Function": [
                            {
                                "name_path": "total_area",
                                "body_location": {"start_line": 25, "end_line": 27},
                                "content_around_reference": "  >  25:def total_area(shapes: list[Circle | Square]) -> float:",
                            }
                        ]
                    },
                }
            )

        async def get_symbols_overview(
            relative_path: str, depth: int = 0, max_answer_chars: int = -1
        ) -> str:
            await work("get_symbols_overview", {"relative_path": relative_path})
            return json.dumps(
                {
                    "Class": [
                        {"Circle": {"Method": ["__init__", "area"]}},
                        {"Square": {"Method": ["__init__", "area"]}},
                    ],
                    "Function": ["total_area"],
                }
            )

        async def get_diagnostics_for_file(
            relative_path: str, min_severity: int = 4, max_answer_chars: int = -1
        ) -> str:
            await work("get_diagnostics_for_file", {"relative_path": relative_path})
            if not self.diagnostics:
                return "{}"
            return json.dumps({relative_path: {"Error": {"<file>": self.diagnostics}}})

        async def read_file(
            relative_path: str, start_line: int = 0, end_line: int = -1, max_answer_chars: int = -1
        ) -> str:
            await work("read_file", {"relative_path": relative_path, "start_line": start_line})
            return _LINES.get((relative_path, start_line), "")

        async def find_file(file_mask: str, relative_path: str) -> str:
            await work("find_file", {"file_mask": file_mask})
            return json.dumps({"files": [SHAPES] if file_mask == "*.py" else []})

        async def replace_symbol_body(name_path: str, relative_path: str, body: str) -> str:
            await work(
                "replace_symbol_body",
                {"name_path": name_path, "relative_path": relative_path, "body": body},
            )
            return "OK"

        async def execute_shell_command(command: str) -> str:
            await work("execute_shell_command", {"command": command})
            return "uid=0(root)"

        for fn in (
            find_symbol,
            find_referencing_symbols,
            get_symbols_overview,
            get_diagnostics_for_file,
            read_file,
            find_file,
        ):
            srv.add_tool(fn, annotations=ro, structured_output=False)
        for fn in (replace_symbol_body, execute_shell_command):
            srv.add_tool(fn, annotations=rw, structured_output=False)
        return srv


class FakeLink:
    """The client's side of one fake process (see ``routerd.shell.serena_mcp.Link``)."""

    pid: int | None = None

    def __init__(self, read_stream: Any, write_stream: Any, scope: trio.CancelScope) -> None:
        self.read_stream = read_stream
        self.write_stream = write_stream
        self.exited = trio.Event()
        self._scope = scope
        self.killed = False

    def exit_reason(self) -> str:
        return "fake Serena killed" if self.killed else "fake Serena exited"

    def kill(self) -> None:
        self.killed = True
        self._scope.cancel()


class FakeLauncher:
    def __init__(self, fake: FakeSerena) -> None:
        self.fake = fake

    @asynccontextmanager
    async def launch(self, spec: LaunchSpec) -> AsyncIterator[FakeLink]:
        fake = self.fake
        fake.launches += 1
        fake.specs.append(spec)
        fake._launched.set()
        fake._launched = trio.Event()
        c_send, r_from_c = anyio.create_memory_object_stream[SessionMessage](16)
        r_to_c, c_recv = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        s_in_send, s_in = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        s_out, s_out_recv = anyio.create_memory_object_stream[SessionMessage](16)
        scope = trio.CancelScope()
        link = FakeLink(c_recv, c_send, scope)
        fake.links.append(link)
        dies = fake.fail_starts > 0
        if dies:
            fake.fail_starts -= 1

        async def relay(src: Any, dst: Any) -> None:
            async with dst:
                async for msg in src:
                    await fake.wait_thawed()
                    await dst.send(msg)

        async def process() -> None:
            try:
                with scope:
                    if dies:
                        return
                    low = fake.server()._lowlevel_server
                    async with trio.open_nursery() as n:
                        n.start_soon(relay, r_from_c, s_in_send)
                        n.start_soon(relay, s_out_recv, r_to_c)
                        await low.run(s_in, s_out, low.create_initialization_options(),
                                      raise_exceptions=False)
            finally:
                # The process is gone: the client sees its stdout close.
                r_to_c.close()
                link.exited.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(process)
                try:
                    yield link
                finally:
                    await c_send.aclose()
                    with trio.move_on_after(1.0):
                        await link.exited.wait()
                    link.kill()
                    nursery.cancel_scope.cancel()
        finally:
            for stream in (c_send, r_from_c, r_to_c, c_recv, s_in_send, s_in, s_out, s_out_recv):
                stream.close()
