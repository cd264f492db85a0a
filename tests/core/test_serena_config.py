"""The ``serena`` configuration section: workspaces as paths or tables, and its checks."""

from __future__ import annotations

import pytest

from routerd.core.config import ConfigError, SerenaWorkspaceConfig, parse_config, resolve_paths
from routerd.core.serena_access import READ_TOOLS, WRITE_TOOLS


def test_defaults_are_offline_and_read_only() -> None:
    s = parse_config("", fmt="yaml", env={}).serena
    assert s.languages == ["python_jedi"] and s.command == ["serena", "start-mcp-server"]
    assert s.read_tools == list(READ_TOOLS) and s.write_tools == list(WRITE_TOOLS)
    assert s.workspace_entries() == []


def test_workspaces_mix_paths_and_tables() -> None:
    s = parse_config(
        "serena:\n  workspace: /w\n  workspaces:\n    - /a\n"
        "    - {path: /b, writable: true, write_uids: [1000], start: false}\n",
        fmt="yaml", env={}).serena
    assert s.workspace_entries() == [
        SerenaWorkspaceConfig(path="/w"), SerenaWorkspaceConfig(path="/a"),
        SerenaWorkspaceConfig(path="/b", writable=True, write_uids=[1000], start=False)]
    toml = parse_config('[serena]\nworkspaces = ["/a", {path = "/b", writable = true}]\n',
                        fmt="toml", env={}).serena
    assert toml.workspace_entries()[1].writable


def test_relative_workspace_tables_and_home_are_resolved() -> None:
    cfg = parse_config("serena:\n  home: state/serena\n  workspaces: [src, {path: ../lib}]\n",
                       fmt="yaml", env={})
    out = resolve_paths(cfg, "/etc/routerd").serena
    assert out.home == "/etc/routerd/state/serena"
    assert out.workspaces == ["/etc/routerd/src", SerenaWorkspaceConfig(path="/etc/lib")]


@pytest.mark.parametrize(("text", "path", "words"), [
    ("serena:\n  read_tools: [execute_shell_command]\n", "$.serena.read_tools[0]",
     "never offered"),
    ("serena:\n  write_tools: [activate_project]\n", "$.serena.write_tools[0]", "never offered"),
    ("serena:\n  read_tools: [find_symbol, rename_symbol]\n", "$.serena.read_tools[1]",
     "write_tools"),
    ("serena:\n  workspaces: [/a, {path: /a/}]\n", "$.serena.workspaces[1].path",
     "already listed"),
    ("serena:\n  workspace: /a\n  workspaces: [/a]\n", "$.serena.workspaces[0]",
     "already listed"),
    ("serena:\n  workspaces: [{path: /a, writeable: true}]\n",
     "$.serena.workspaces[0].writeable", "did you mean 'writable'"),
    ("serena:\n  workspaces: [{writable: true}]\n", "$.serena.workspaces[0].path", "missing"),
    ("serena:\n  workspaces: [{path: /a, write_uids: [-1]}]\n",
     "$.serena.workspaces[0].write_uids[0]", ">= 0"),
    ("serena:\n  ping_interval: 5\n  ping_timeout: 10\n", "$.serena.ping_timeout",
     "ping_interval"),
    ("serena:\n  backoff_initial: 10\n  backoff_max: 5\n", "$.serena.backoff_max",
     "backoff_initial"),
    ("serena:\n  call_timeout: 0\n", "$.serena.call_timeout", "more than 0"),
    ("serena:\n  idle_timeout: -1\n", "$.serena.idle_timeout", "zero"),
    ("serena:\n  languages: []\n", "$.serena.languages", "at least one"),
    ("serena:\n  max_running: 0\n", "$.serena.max_running", ">= 1"),
    ("serena:\n  home: ' '\n", "$.serena.home", "empty"),
])
def test_bad_values_are_located(text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, fmt="yaml", env={})
    assert err.value.path == path
    assert words in err.value.message
