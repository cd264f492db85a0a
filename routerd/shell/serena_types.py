"""The Serena feature's vocabulary, free of the ``mcp`` SDK (importing that costs half a
second, which the daemon pays after READY, not before): errors, tool descriptions, and the
:class:`Link` / :class:`Launcher` seams between the supervisor and a Serena process (real, in
``serena_mcp``, or fake, in the tests).

::

    SerenaError
    ├── SerenaGone        the connection closed: the process exited, crashed or was killed
    ├── SerenaTimeout     no answer in time (a hung Serena, or a slow tool)
    ├── SerenaBusy        too many calls are waiting for this Serena
    └── SerenaProtocol    Serena answered with an MCP error or something unreadable
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import msgspec
import trio

__all__ = [
    "Launcher",
    "LaunchSpec",
    "Link",
    "SerenaBusy",
    "SerenaError",
    "SerenaGone",
    "SerenaProtocol",
    "SerenaTimeout",
    "ToolAnswer",
    "ToolInfo",
]


class SerenaError(Exception):
    """A Serena failure, in one line."""


class SerenaGone(SerenaError):
    pass


class SerenaTimeout(SerenaError):
    pass


class SerenaBusy(SerenaError):
    pass


class SerenaProtocol(SerenaError):
    pass


class ToolInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    read_only: bool | None = None  # Serena's own read_only_hint
    input_schema: dict[str, Any] = {}


class ToolAnswer(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    is_error: bool = False


class Link(Protocol):
    """One connection to a Serena. ``exited`` is set when its process (or fake) is gone."""

    pid: int | None
    read_stream: Any  # anyio receive stream of SessionMessage | Exception
    write_stream: Any  # anyio send stream of SessionMessage
    exited: trio.Event

    def exit_reason(self) -> str:
        """One line on why it exited (exit status and Serena's last stderr line)."""
        ...

    def kill(self) -> None:
        """Kill it now (all its process groups), without waiting."""
        ...


class LaunchSpec(msgspec.Struct, frozen=True, kw_only=True):
    argv: list[str]
    env: dict[str, str]
    cwd: str


class Launcher(Protocol):
    def launch(self, spec: LaunchSpec) -> AbstractAsyncContextManager[Link]:
        """Start a Serena; on exit stop it (a short grace, then kill) and release everything."""
        ...
