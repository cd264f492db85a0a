"""Default socket path, connect-error wording, and coding-agent detection."""

from __future__ import annotations

import errno
import os

import pytest

from routerd_client.agent import detect_agent, parent_comm
from routerd_client.paths import SYSTEM_SOCKET, default_socket_path, describe_connect_error
from routerd_client.protocol import AgentInfo

# --- default_socket_path ---------------------------------------------------------------------

XDG_SOCK = "/run/user/1000/routerd/routerd.sock"


def exists_only(*paths: str):  # type: ignore[no-untyped-def]
    return lambda p: p in paths


def test_env_variable_wins() -> None:
    env = {"ROUTERD_SOCKET": "/tmp/mine.sock", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(env, exists=exists_only(XDG_SOCK, SYSTEM_SOCKET)) == "/tmp/mine.sock"


def test_empty_env_variable_is_ignored() -> None:
    env = {"ROUTERD_SOCKET": "", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(env, exists=exists_only(XDG_SOCK)) == XDG_SOCK


def test_existing_user_socket_before_existing_system_socket() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(env, exists=exists_only(XDG_SOCK, SYSTEM_SOCKET)) == XDG_SOCK


def test_existing_system_socket_before_missing_user_socket() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(env, exists=exists_only(SYSTEM_SOCKET)) == SYSTEM_SOCKET


def test_nothing_exists_user_path_if_xdg_set_else_system() -> None:
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}, exists=exists_only()) == (
        "/run/user/7/routerd/routerd.sock"
    )
    assert default_socket_path({}, exists=exists_only()) == SYSTEM_SOCKET
    # a relative XDG_RUNTIME_DIR is invalid per the XDG spec and ignored
    assert default_socket_path({"XDG_RUNTIME_DIR": "rel"}, exists=exists_only()) == SYSTEM_SOCKET


def test_real_existence_check(short_tmp: str) -> None:
    sock = os.path.join(short_tmp, "routerd", "routerd.sock")
    os.mkdir(os.path.dirname(sock))
    open(sock, "w").close()
    assert default_socket_path({"XDG_RUNTIME_DIR": short_tmp}) == sock


def test_default_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTERD_SOCKET", "/x/y.sock")
    assert default_socket_path() == "/x/y.sock"


@pytest.mark.parametrize(("exc", "reason"), [
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (TimeoutError("timed out"), "timed out connecting"),
    (OSError(errno.ENOTDIR, "Not a directory"), "a part of the path is not a directory"),
    (OSError("AF_UNIX path too long"), "AF_UNIX path too long"),
])
def test_describe_connect_error(exc: OSError, reason: str) -> None:
    assert describe_connect_error("/nonexistent/x.sock", exc) == reason


# --- detect_agent ----------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "expected"), [
    ({"CLAUDECODE": "1"}, AgentInfo("claude-code", "cli")),
    ({"GEMINI_CLI": "1"}, AgentInfo("gemini-cli", "cli")),
    ({"QWEN_CODE": "1"}, AgentInfo("qwen-code", "cli")),
    ({"CODEX_SANDBOX": "seatbelt"}, AgentInfo("codex", "cli")),
    ({"OPENCODE": "1"}, AgentInfo("opencode", "cli")),
    ({"AIDER_SESSION": "1"}, AgentInfo("aider", "cli")),
    ({"QWEN_CLI_VERSION": "0.0.9"}, AgentInfo("qwen-cli", "cli", "0.0.9")),
    ({"CONTINUE_SESSION": "v1.2.3"}, AgentInfo("continue", "ide", "1.2.3")),
    ({"JAN_SESSION": "abc123-session"}, AgentInfo("jan", "gui")),
    ({"MCP_CLIENT": "Zed"}, AgentInfo("zed", "mcp")),
    ({"MCP_CLIENT": "1"}, AgentInfo("mcp-client", "mcp")),
    ({"LLM_AGENT": "1"}, AgentInfo("generic", "unknown")),
    ({"AI_AGENT": "warp"}, AgentInfo("warp", "unknown")),
    ({"TERM_PROGRAM": "vscode"}, AgentInfo("vscode", "ide")),
    ({"INSIDE_EMACS": "29.1,vterm"}, AgentInfo("emacs", "ide")),
    ({"TERM_PROGRAM": "iTerm.app"}, AgentInfo()),
    ({}, AgentInfo()),
])
def test_env_markers(env: dict[str, str], expected: AgentInfo) -> None:
    assert detect_agent(env, ppid_comm="") == expected


def test_false_values_do_not_count() -> None:
    assert detect_agent({"CLAUDECODE": "0", "AIDER_SESSION": "false"}, ppid_comm="") == AgentInfo()


def test_explicit_override_beats_everything() -> None:
    env = {"ROUTERD_AGENT": "MyBot/2.1", "CLAUDECODE": "1"}
    assert detect_agent(env, ppid_comm="aider") == AgentInfo("mybot", "explicit", "2.1")
    assert detect_agent({"ROUTERD_AGENT": "!!"}, ppid_comm="") == AgentInfo()


def test_agent_variables_beat_editor_hints_and_parent() -> None:
    env = {"TERM_PROGRAM": "vscode", "CLINE_ACTIVE": "true"}
    assert detect_agent(env, ppid_comm="aider") == AgentInfo("cline", "ide")


def test_parent_process_name_is_matched_exactly() -> None:
    assert detect_agent({}, ppid_comm="aider") == AgentInfo("aider", "cli")
    assert detect_agent({}, ppid_comm="Cursor\n") == AgentInfo("cursor", "ide")
    assert detect_agent({}, ppid_comm="bash") == AgentInfo()
    assert detect_agent({}, ppid_comm="continuerd") == AgentInfo()  # no substring matches
    # the parent beats the generic markers and editor hints
    assert detect_agent({"LLM_AGENT": "1", "NVIM": "/tmp/nvim.sock"}, ppid_comm="codex") == (
        AgentInfo("codex", "cli")
    )


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getppid()}/comm"), reason="needs /proc")
def test_parent_comm_reads_proc() -> None:
    with open(f"/proc/{os.getppid()}/comm") as f:
        assert parent_comm() == f.read().strip()
    # ppid_comm=None reads it: with a clean environment the result is whatever the parent is
    info = detect_agent({})
    assert isinstance(info, AgentInfo)
