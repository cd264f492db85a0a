"""Which coding agent is this client running under?

The answer goes to the daemon in ``hello`` and feeds its routing preferences. It is worked out
here, on the client side, because the editor's or agent's environment is the client's, not the
daemon's.

Evidence, strongest first:

1. ``ROUTERD_AGENT=name[/version]``: the user says so.
2. Variables agents set for the commands they run (``CLAUDECODE``, ``GEMINI_CLI``, ``QWEN_CODE``,
   ``CODEX_SANDBOX``, ``OPENCODE``, ...) and the design's ``*_SESSION`` markers.
3. ``MCP_CLIENT`` (an MCP host naming itself).
4. The parent process's name (``/proc/<ppid>/comm`` on Linux), matched exactly.
5. ``AI_AGENT`` / ``LLM_AGENT`` (generic markers; their value names the agent when it can).
6. The editor whose terminal we run in (``TERM_PROGRAM=vscode``, ``INSIDE_EMACS``, ``NVIM``...).

A marker counts only when its value is non-empty and not a "false" word; a value that looks like
a version number becomes the agent's version. Nothing here raises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from .protocol import AgentInfo

__all__ = ["AgentInfo", "AGENT_ENV_MARKERS", "PARENT_PROCESS_NAMES", "detect_agent", "parent_comm"]

#: Variable -> (agent name, agent type). Checked in this order; the first present one wins.
AGENT_ENV_MARKERS: Final[tuple[tuple[str, str, str], ...]] = (
    # Variables real agents put in the environment of the commands they run.
    ("CLAUDECODE", "claude-code", "cli"),
    ("GEMINI_CLI", "gemini-cli", "cli"),
    ("QWEN_CODE", "qwen-code", "cli"),
    ("CODEX_SANDBOX", "codex", "cli"),
    ("CODEX_SANDBOX_NETWORK_DISABLED", "codex", "cli"),
    ("CODEX_THREAD_ID", "codex", "cli"),
    ("OPENCODE", "opencode", "cli"),
    ("CURSOR_AGENT", "cursor", "ide"),
    ("CLINE_ACTIVE", "cline", "ide"),
    ("GOOSE_TERMINAL", "goose", "cli"),
    ("CRUSH", "crush", "cli"),
    ("COPILOT_CLI", "copilot", "cli"),
    # The markers of the original design (set by wrappers and launch scripts).
    ("QWEN_CLI_VERSION", "qwen-cli", "cli"),
    ("OPENCODE_SESSION", "opencode", "cli"),
    ("AIDER_SESSION", "aider", "cli"),
    ("CODEX_SESSION", "codex", "cli"),
    ("GEMINI_CLI_SESSION", "gemini-cli", "cli"),
    ("CONTINUE_SESSION", "continue", "ide"),
    ("CLINE_SESSION", "cline", "ide"),
    ("ROO_CODE_SESSION", "roo-code", "ide"),
    ("CURSOR_SESSION", "cursor", "ide"),
    ("OPENWEBUI_SESSION", "openwebui", "gui"),
    ("JAN_SESSION", "jan", "gui"),
    ("AGNO_SESSION", "agno", "gui"),
)

#: Parent process name (as in ``/proc/<pid>/comm``, lowercased) -> (agent name, agent type).
#: Exact matches only: a substring test would take ``continuerd`` or ``my-cursor-theme`` for an
#: agent. Node-based agents show up as ``node`` and are found by their variables instead.
PARENT_PROCESS_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    "aider": ("aider", "cli"),
    "codex": ("codex", "cli"),
    "qwen": ("qwen-code", "cli"),
    "gemini": ("gemini-cli", "cli"),
    "claude": ("claude-code", "cli"),
    "opencode": ("opencode", "cli"),
    "goose": ("goose", "cli"),
    "crush": ("crush", "cli"),
    "cursor": ("cursor", "ide"),
    "zed": ("zed", "ide"),
    "nvim": ("neovim", "ide"),
    "emacs": ("emacs", "ide"),
}

#: Editors whose integrated terminal we may be running in: the weakest evidence.
_EDITOR_HINTS: Final[tuple[tuple[str, str | None, str], ...]] = (
    # (variable, required value or None for "any non-empty", agent name)
    ("CURSOR_TRACE_ID", None, "cursor"),
    ("TERM_PROGRAM", "vscode", "vscode"),
    ("ZED_TERM", None, "zed"),
    ("TERM_PROGRAM", "zed", "zed"),
    ("TERMINAL_EMULATOR", "JetBrains-JediTerm", "jetbrains"),
    ("NVIM", None, "neovim"),
    ("INSIDE_EMACS", None, "emacs"),
)

_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
_VERSION: Final = re.compile(r"v?(\d+(?:\.\d+)*(?:[-+.][0-9A-Za-z.-]+)?)\Z")
_NAME_OK: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def _set(value: str) -> bool:
    word = value.strip().lower()
    return bool(word) and word not in _FALSE_WORDS


def _version_of(value: str) -> str | None:
    """``"0.50.1"`` or ``"v1.2"`` is a version; ``"1"`` (the usual "set" value) is not."""
    if value.strip().lower() in _TRUE_WORDS:
        return None
    match = _VERSION.match(value.strip())
    return match.group(1) if match else None


def _name_from(value: str, fallback: str) -> str:
    """A marker value used as a name, if it looks like one (``"aider"``, not ``"1"``)."""
    value = value.strip()
    if value.lower() in _TRUE_WORDS or not _NAME_OK.match(value):
        return fallback
    return value.lower()


def parent_comm() -> str:
    """The parent process's short name from ``/proc/<ppid>/comm``, or ``""`` where there is no
    such file (not Linux, no /proc, a race with the parent's exit)."""
    try:
        with open(f"/proc/{os.getppid()}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def detect_agent(env: Mapping[str, str] | None = None, ppid_comm: str | None = None) -> AgentInfo:
    """Return the coding agent this process runs under (``AgentInfo(name="unknown")`` if none).

    ``env`` defaults to ``os.environ``. ``ppid_comm`` is the parent process's name; ``None``
    reads it from ``/proc`` and ``""`` skips that step.
    """
    if env is None:
        env = os.environ

    explicit = env.get("ROUTERD_AGENT", "").strip()
    if explicit:
        name, _, version = explicit.partition("/")
        name = _name_from(name, "unknown")
        if name != "unknown":
            return AgentInfo(name=name, type="explicit", version=version.strip() or None)

    for var, name, kind in AGENT_ENV_MARKERS:
        value = env.get(var)
        if value is not None and _set(value):
            return AgentInfo(name=name, type=kind, version=_version_of(value))

    mcp_client = env.get("MCP_CLIENT")
    if mcp_client is not None and _set(mcp_client):
        return AgentInfo(name=_name_from(mcp_client, "mcp-client"), type="mcp")

    comm = parent_comm() if ppid_comm is None else ppid_comm
    found = PARENT_PROCESS_NAMES.get(comm.strip().lower())
    if found is not None:
        return AgentInfo(name=found[0], type=found[1])

    for var in ("AI_AGENT", "LLM_AGENT"):
        value = env.get(var)
        if value is not None and _set(value):
            return AgentInfo(name=_name_from(value, "generic"), type="unknown")

    for var, wanted, name in _EDITOR_HINTS:
        value = env.get(var)
        if value is not None and _set(value) and (wanted is None or value == wanted):
            return AgentInfo(name=name, type="ide")

    return AgentInfo()
