"""The pure side of keeping Serena warm: the state table, backoff, evictions, how it starts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.serena import (
    TRANSITIONS,
    BackoffPolicy,
    InvalidTransition,
    LatencyWindow,
    SerenaEvent,
    SerenaState,
    SupervisorStatus,
    WorkspaceUsage,
    advance,
    backoff_delay,
    base_name,
    global_config,
    plan_evictions,
    project_config,
    serena_args,
    serena_environment,
    source_masks,
    workspace_key,
)

P = BackoffPolicy(initial=1.0, maximum=60.0, factor=2.0, jitter=0.2, stable_after=60.0)
E = SerenaEvent


def run(events: list[tuple[SerenaEvent, float]], **kw: object) -> SupervisorStatus:
    st_ = SupervisorStatus()
    for event, now in events:
        st_ = advance(st_, event, now, policy=P, **kw)  # type: ignore[arg-type]
    return st_


# --- state machine ------------------------------------------------------------------------------


def test_a_normal_life() -> None:
    s = advance(SupervisorStatus(), E.START, 10.0, policy=P, pid=42)
    assert (s.state, s.pid, s.starts, s.started_at) == (SerenaState.STARTING, 42, 1, 10.0)
    s = advance(s, E.INITIALIZED, 11.0, policy=P)
    assert s.state is SerenaState.WARMING and s.pid == 42
    s = advance(s, E.WARMED, 15.0, policy=P)
    assert (s.state, s.ready_at, s.failures, s.restarts) == (SerenaState.READY, 15.0, 0, 0)
    assert s.uptime(20.0) == 10.0
    s = advance(s, E.STOP, 30.0, policy=P)
    assert s.state is SerenaState.STOPPING
    s = advance(s, E.EXITED, 31.0, policy=P)
    assert (s.state, s.pid, s.uptime(40.0)) == (SerenaState.STOPPED, None, None)


def test_failures_back_off_exponentially_and_reset_when_ready() -> None:
    s = run([(E.START, 0.0)])
    delays = []
    for i in range(5):
        s = advance(s, E.FAILED, 100.0 * i, policy=P, error="boom")
        assert s.state is SerenaState.BACKOFF and s.last_error == "boom"
        assert s.next_retry_at is not None
        delays.append(s.next_retry_at - 100.0 * i)
        s = advance(s, E.START, 100.0 * i + 50, policy=P)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert s.failures == 5 and s.restarts == 5
    s = advance(advance(s, E.INITIALIZED, 600.0, policy=P), E.WARMED, 601.0, policy=P)
    assert s.failures == 0
    # ready long enough: the next failure is a first failure again
    s = advance(s, E.FAILED, 601.0 + 61.0, policy=P, error="x")
    assert s.failures == 1 and s.next_retry_at == 601.0 + 61.0 + 1.0


def test_failing_soon_after_ready_keeps_counting() -> None:
    s = run([(E.START, 0.0), (E.INITIALIZED, 1.0), (E.WARMED, 2.0)])
    s = advance(s, E.FAILED, 3.0, policy=P, error="x")
    s = advance(s, E.START, 4.0, policy=P)
    s = advance(advance(s, E.INITIALIZED, 5.0, policy=P), E.WARMED, 6.0, policy=P)
    s = advance(s, E.FAILED, 10.0, policy=P, error="again")
    assert s.failures == 1  # ready resets the count...
    s = advance(s, E.START, 11.0, policy=P)
    s = advance(s, E.FAILED, 12.0, policy=P, error="during start")
    assert s.failures == 2  # ...but failing while starting does not


def test_restart_skips_backoff_and_resets_failures() -> None:
    s = run([(E.START, 0.0), (E.FAILED, 1.0), (E.START, 3.0), (E.FAILED, 4.0)], error="x")
    assert s.failures == 2 and s.state is SerenaState.BACKOFF
    s = advance(s, E.RESTART, 4.5, policy=P)
    assert (s.state, s.failures, s.next_retry_at, s.restarts) == (
        SerenaState.STARTING, 0, None, 2)


def test_dying_while_stopping_is_a_stop() -> None:
    s = run([(E.START, 0.0), (E.STOP, 1.0), (E.FAILED, 1.5)], error="killed")
    assert s.state is SerenaState.STOPPED and s.last_error is None


@pytest.mark.parametrize("state", list(SerenaState))
@pytest.mark.parametrize("event", list(SerenaEvent))
def test_the_table_is_the_whole_story(state: SerenaState, event: SerenaEvent) -> None:
    status = SupervisorStatus(state=state, started_at=0.0)
    if (state, event) in TRANSITIONS:
        assert advance(status, event, 1.0, policy=P).state is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=event.value):
            advance(status, event, 1.0, policy=P)


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1,
                                                             exclude_max=True))
def test_backoff_is_bounded_and_jitter_only_shortens(failures: int, jitter: float) -> None:
    full = backoff_delay(failures, P)
    shorter = backoff_delay(failures, P, jitter)
    assert 0 < shorter <= full <= P.maximum
    assert shorter >= full * (1 - P.jitter) - 1e-9


@given(st.integers(min_value=1, max_value=200))
def test_backoff_never_decreases_with_more_failures(n: int) -> None:
    assert backoff_delay(n, P) <= backoff_delay(n + 1, P)


def test_latency_window_summary() -> None:
    w = LatencyWindow(size=4)
    assert w.summary() == {"calls": 0, "last_ms": None, "p50_ms": None, "p95_ms": None}
    for ms in (10, 20, 30, 40, 1000):
        w = w.record(ms)
    assert w.samples == (20.0, 30.0, 40.0, 1000.0) and w.calls == 5
    assert w.summary() == {"calls": 5, "last_ms": 1000.0, "p50_ms": 40.0, "p95_ms": 1000.0}


# --- evictions ---------------------------------------------------------------------------------


def u(last: float, pinned: bool = False, busy: bool = False) -> WorkspaceUsage:
    return WorkspaceUsage(last_used=last, pinned=pinned, busy=busy)


def test_idle_ones_stop_and_lru_makes_room() -> None:
    usage = {"/a": u(0.0), "/b": u(50.0), "/c": u(90.0, pinned=True)}
    plan = plan_evictions(usage, max_running=3, idle_timeout=60.0, now=100.0)
    assert plan.stop == ["/a"] and plan.fits
    plan = plan_evictions(usage, max_running=3, idle_timeout=0, now=100.0, incoming="/d")
    assert plan.stop == ["/a"] and plan.fits  # least recently used first
    plan = plan_evictions(usage, max_running=1, idle_timeout=0, now=100.0, incoming="/d")
    assert plan.stop == ["/a", "/b"] and not plan.fits  # /c is pinned: no room for /d


def test_busy_ones_are_never_chosen() -> None:
    plan = plan_evictions({"/a": u(0.0, busy=True), "/b": u(1.0)}, max_running=1,
                          idle_timeout=10.0, now=100.0, incoming="/c")
    assert plan.stop == ["/b"] and not plan.fits


_usages = st.dictionaries(
    st.sampled_from([f"/w{i}" for i in range(8)]),
    st.builds(WorkspaceUsage, last_used=st.floats(0, 100), pinned=st.booleans(),
              busy=st.booleans()),
    max_size=8)


@given(_usages, st.integers(1, 8), st.sampled_from([0.0, 30.0]),
       st.sampled_from([None, "/w0", "/new"]))
def test_evictions_respect_pins_and_the_limit(usage: dict[str, WorkspaceUsage], limit: int,
                                              idle: float, incoming: str | None) -> None:
    plan = plan_evictions(usage, max_running=limit, idle_timeout=idle, now=100.0,
                          incoming=incoming)
    assert len(plan.stop) == len(set(plan.stop))
    assert all(not usage[w].pinned and not usage[w].busy and w != incoming for w in plan.stop)
    left = (set(usage) - set(plan.stop)) | ({incoming} if incoming else set())
    assert plan.fits == (len(left) <= limit)
    if not plan.fits:  # it really could not: everything movable is stopped
        movable = {w for w, x in usage.items() if not x.pinned and not x.busy and w != incoming}
        assert movable <= set(plan.stop)


# --- how Serena starts --------------------------------------------------------------------------


def test_command_line_selects_tools_stdio_and_no_dashboard() -> None:
    argv = serena_args(["/v/bin/serena", "start-mcp-server"], "/src/p")
    assert argv[:4] == ["/v/bin/serena", "start-mcp-server", "--project", "/src/p"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs == {
        "--context": "agent", "--agent-interface": "tools", "--transport": "stdio",
        "--enable-web-dashboard": "false", "--enable-gui-log-window": "false",
        "--open-web-dashboard": "false"}


def test_environment_turns_reporting_off_and_keeps_secrets_out() -> None:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "AWS_SECRET_ACCESS_KEY": "x",
            "SERENA_USAGE_REPORTING": "true", "LANG": "C.UTF-8"}
    env = serena_environment(base, home="/state/serena/p/home", program="/v/bin/serena")
    assert env["SERENA_USAGE_REPORTING"] == "false"
    assert env["SERENA_HOME"] == "/state/serena/p/home"
    assert env["PATH"] == "/v/bin:/usr/bin:/bin"  # language servers installed beside serena
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["LANG"] == "C.UTF-8"
    bare = serena_environment(base, home="/h", program="serena")
    assert bare["PATH"] == "/usr/bin:/bin"


def test_windows_environment_keeps_what_windows_programs_need() -> None:
    base = {"PATH": "C:\\Windows\\system32;C:\\venv\\scripts;;C:\\Tools",
            "SYSTEMROOT": "C:\\Windows", "USERPROFILE": "C:\\Users\\me",
            "LOCALAPPDATA": "C:\\Users\\me\\AppData\\Local", "AWS_SECRET_ACCESS_KEY": "x"}
    env = serena_environment(base, home="C:\\state\\home", flavor="windows",
                             program="C:\\venv\\Scripts\\serena.exe")
    # The program's folder first (once: case-insensitively), entries split on ";".
    assert env["PATH"] == "C:\\venv\\Scripts;C:\\Windows\\system32;C:\\Tools"
    assert env["SYSTEMROOT"] == "C:\\Windows" and env["USERPROFILE"] == "C:\\Users\\me"
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["SERENA_USAGE_REPORTING"] == "false"
    assert env["SERENA_HOME"] == "C:\\state\\home"
    assert serena_environment(base, home="h", program="serena",
                              flavor="windows")["PATH"] == base["PATH"]
    assert serena_environment({}, home="h", program="C:/v/Scripts/serena.exe",
                              flavor="windows")["PATH"] == "C:/v/Scripts"
    # The POSIX rules keep Windows-only variables out and split PATH on ":".
    assert "SYSTEMROOT" not in serena_environment(base, home="h", program="serena")


def test_serena_config_files() -> None:
    cfg = global_config(data_dir="/state/p/data", excluded_tools=["b", "a", "a"],
                        ls_settings={"python": {"ls_path": "/x"}}, tool_timeout=3.0,
                        auth_secret="s")
    assert cfg["projects"] == [] and cfg["web_dashboard"] is False
    assert cfg["project_serena_folder_location"] == "/state/p/data"
    assert cfg["excluded_tools"] == ["a", "b"] and cfg["tool_timeout"] == 10.0
    assert cfg["trusted_project_path_patterns"] == []
    assert cfg["agent_interface"] == "tools"
    json.dumps(cfg)  # written as JSON (a YAML subset)
    proj = project_config(name="p", languages=["python_jedi"], read_only=True,
                          excluded_tools=["x"])
    assert proj["language_servers"] == ["python_jedi"] and proj["read_only"] is True


def test_workspace_keys_are_safe_and_distinct() -> None:
    a, b = workspace_key("/home/u/a/src"), workspace_key("/home/u/b/src")
    assert a != b and a.startswith("src-") and b.startswith("src-")
    assert "/" not in workspace_key("/weird name/..;rm -rf") and workspace_key("/")
    assert workspace_key("/a/src/").startswith("src-")
    win = workspace_key("C:\\Users\\me\\src", flavor="windows")
    assert win.startswith("src-") and win != workspace_key("D:\\Users\\me\\src", flavor="windows")
    assert workspace_key("C:\\", flavor="windows").startswith("root-")
    assert workspace_key("\\\\srv\\share\\p\\", flavor="windows").startswith("p-")
    assert workspace_key("C:\\Users\\me\\src").startswith("C_Users_me_src-")  # POSIX rules
    assert base_name("/a/b/") == "b" and base_name("C:/a/b", flavor="windows") == "b"


def test_source_masks() -> None:
    assert source_masks(["python_jedi", "python", "go"]) == ["*.py", "*.go"]
    assert source_masks(["cobol"]) == []
