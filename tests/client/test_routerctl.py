"""routerctl: output, JSON, and exit codes (0 ok, 1 daemon error, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from routerd_client.cli import human_duration, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("routerctl: ")
    return lines[0]


# --- status ----------------------------------------------------------------------------------

def test_status_table(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--socket", fake_daemon.path, "status")
    assert (code, err) == (0, "")
    rows = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
            for line in out.splitlines() if "  " in line and not line.startswith(" ")}
    assert rows["version"] == "9.8.7"
    assert rows["pid"] == "4242"
    assert rows["uptime"].startswith("3h 04m (since ")
    assert rows["socket"] == "/run/routerd/routerd.sock"
    assert rows["config"] == "/etc/routerd/config.toml"
    assert rows["generation"] == "3"
    assert rows["last reload"].endswith(", ok")
    assert rows["connections"] == "1 open, 12 total, 0 refused"
    assert rows["requests"] == "40 total, 1 in flight, 2 failed, 0 cancelled"
    assert rows["errors"] == "bad_request 1, unknown_method 2"
    assert "components\n  serena  state=running, tools=12" in out


def test_status_table_for_a_fresh_daemon(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_daemon.status.update(config_path=None, last_reload=None, errors={}, components={})
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "status")
    assert code == 0
    assert "built-in defaults" in out
    assert "last reload  never" in out
    assert "errors       none" in out
    assert "components" not in out


def test_status_shows_a_failed_reload(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake_daemon.status["last_reload"] = {"at": 1.7e9, "ok": False, "error": "bad key"}
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "status")
    assert code == 0
    assert "failed: bad key" in out


def test_status_json_is_the_daemon_answer(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (("--json", "--socket", fake_daemon.path, "status"),
                 ("status", "--socket", fake_daemon.path, "--json")):
        code, out, err = run(capsys, *argv)
        assert (code, err) == (0, "")
        assert json.loads(out) == fake_daemon.status
        assert "future_field" in json.loads(out)  # fields this client does not know are kept


def test_routerctl_says_hello_as_routerctl(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTERD_AGENT", "aider/0.50.1")
    run(capsys, "--socket", fake_daemon.path, "ping")
    (hello,) = fake_daemon.hellos
    assert hello["client"]["name"] == "routerctl"
    assert hello["agent"] == {"name": "aider", "type": "explicit", "version": "0.50.1"}


# --- ping, reload, version -------------------------------------------------------------------

def test_ping(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "ping")
    assert code == 0
    assert out.startswith(f"pong from routerd at {fake_daemon.path} in ")
    assert out.strip().endswith(" ms")
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "--json", "ping", "-c", "3")
    data = json.loads(out)
    assert code == 0
    assert data["count"] == 3 and len(data["rtt_ms"]) == 3
    assert data["min_ms"] <= data["avg_ms"] <= data["max_ms"]
    assert fake_daemon.methods().count("ping") == 4


def test_reload(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "reload")
    assert code == 0
    assert out.strip() == "configuration reloaded from built-in defaults: generation 4"
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "--json", "reload")
    assert json.loads(out) == {"generation": 4, "config_path": None, "changed": True}


def test_daemon_error_exits_1_with_one_line(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_daemon.reload_error = "/etc/routerd/config.toml: $.services.olama: unknown field"
    code, out, err = run(capsys, "--socket", fake_daemon.path, "reload")
    assert (code, out) == (1, "")
    assert one_line(err) == (
        "routerctl: bad_config: /etc/routerd/config.toml: $.services.olama: unknown field"
    )
    code, out, err = run(capsys, "--socket", fake_daemon.path, "--json", "reload")
    assert (code, err) == (1, "")
    assert json.loads(out) == {"error": {
        "code": "bad_config",
        "message": "bad_config: /etc/routerd/config.toml: $.services.olama: unknown field"}}


def test_daemon_answer_that_breaks_the_contract_exits_1(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_daemon.status = {"version": "x"}
    code, _, err = run(capsys, "--socket", fake_daemon.path, "status")
    assert code == 1
    assert "does not fit" in one_line(err)


def test_version_with_and_without_daemon(
    fake_daemon: Any, short_tmp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--socket", fake_daemon.path, "version")
    assert code == 0
    assert "routerctl  0.1.0 (protocol 1.0)" in out
    assert f"routerd    9.8.7 (protocol 1.0) at {fake_daemon.path}" in out
    missing = os.path.join(short_tmp, "none.sock")
    code, out, _ = run(capsys, "--socket", missing, "version")
    assert code == 0  # documented: version reports what is installed, daemon or not
    assert "not reachable" in out and "no such file" in out
    code, out, _ = run(capsys, "--socket", missing, "--json", "version")
    data = json.loads(out)
    assert data["client"]["version"] == "0.1.0"
    assert data["daemon"] is None
    assert data["daemon_error"]["code"] == "unreachable"


# --- unreachable, lost, timeout: exit 3 ------------------------------------------------------

def test_unreachable_exits_3_and_says_how_to_start(
    short_tmp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(short_tmp, "none.sock")
    code, out, err = run(capsys, "--socket", path, "status")
    assert (code, out) == (3, "")
    assert one_line(err) == (
        f"routerctl: cannot reach routerd at {path}: no such file. "
        "Start it with `routerd` or `systemctl --user start routerd`."
    )
    code, out, err = run(capsys, "--json", "--socket", path, "ping")
    assert (code, err) == (3, "")
    assert json.loads(out)["error"]["code"] == "unreachable"


def test_socket_from_environment(
    fake_daemon: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTERD_SOCKET", fake_daemon.path)
    code, out, _ = run(capsys, "ping")
    assert code == 0 and fake_daemon.path in out


def test_no_answer_in_time_exits_3(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake_daemon.silent.add("status")
    code, _, err = run(capsys, "--socket", fake_daemon.path, "--timeout", "0.1", "status")
    assert code == 3
    assert "sent no answer to 'status' in time" in one_line(err)
    assert "--timeout" in err


def test_connection_lost_exits_3(fake_daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake_daemon.drop.add("status")
    code, _, err = run(capsys, "--socket", fake_daemon.path, "status")
    assert code == 3
    assert "lost the connection" in one_line(err)


# --- usage errors: exit 2 --------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["bogus"],
    [],
    ["config"],
    ["--timeout", "0", "status"],
    ["--timeout", "soon", "status"],
    ["ping", "--count", "0"],
    ["status", "extra"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("routerctl: ")


def test_usage_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "--json", "bogus")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "usage"


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("status", "ping", "reload", "version", "config"):
        assert name in out
    assert "exit codes" in out
    code, out, _ = run(capsys, "config", "check", "--help")
    assert code == 0 and "PATH" in out


# --- config check ----------------------------------------------------------------------------

def test_config_check_reports_an_invalid_file(
    short_tmp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(short_tmp, "config.ini")
    with open(path, "w") as f:
        f.write("x")
    code, _, err = run(capsys, "config", "check", path)
    assert code == 1
    assert path in one_line(err)


def test_config_check_accepts_a_valid_file(
    short_tmp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(short_tmp, "config.toml")
    with open(path, "w") as f:
        f.write("")  # every setting has a default
    code, out, err = run(capsys, "config", "check", path)
    assert (code, err) == (0, "")
    assert out.strip() == f"{path}: ok"


def test_config_check_without_routerd_installed(
    short_tmp: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("routerd", "routerd.core", "routerd.core.config", "routerd.shell",
                 "routerd.shell.config_file"):
        monkeypatch.setitem(sys.modules, name, None)
    code, _, err = run(capsys, "config", "check", os.path.join(short_tmp, "c.toml"))
    assert code == 2
    assert "needs the routerd package" in one_line(err)


# --- helpers and process-level checks --------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (60, "1m 00s"), (3599, "59m 59s"), (3600, "1h 00m"),
    (86399, "23h 59m"), (86400 * 2 + 3600 * 3, "2d 03h"), (-5, "0s"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


_PROBE = (
    "import sys\n"
    "from routerd_client.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "bad = sorted(m for m in ('trio', 'httpx', 'anyio') if m in sys.modules)\n"
    "print('LOADED:' + ','.join(bad))\n"
    "sys.exit(code)\n"
)


@pytest.mark.parametrize("argv", [["status"], ["ping"], ["version"], ["--help"]])
def test_routerctl_imports_neither_trio_nor_httpx(
    fake_daemon: Any, argv: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "--socket", fake_daemon.path, *argv],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED:"


def test_the_routerctl_script_imports_neither_trio_nor_httpx(fake_daemon: Any) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "routerctl")
    if not os.path.exists(script):
        pytest.skip("the routerctl console script is not installed next to this Python")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", script, "--socket", fake_daemon.path, "status"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pid" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "routerd_client.cli" in imported  # the probe really saw the imports
    assert not {m for m in imported if m.split(".")[0] in ("trio", "httpx")}


def test_importing_the_package_does_not_import_trio() -> None:
    code = ("import sys, routerd_client, routerd_client.cli; "
            "print('trio' in sys.modules, 'httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False False"
