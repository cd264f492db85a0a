"""routerctl audit/verify/doctor against a real routerd subprocess, and their offline parts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from routerd_client import Client, DaemonUnreachable
from routerd_client.cli import main
from routerd_client.cli_security import format_record, local_checks


class Daemon(NamedTuple):
    socket: str
    state: Path
    home: Path


# The real daemon with the security feature only: these tests do not depend on the others.
_LAUNCHER = """
import sys
from routerd.shell import features, security
features.FEATURES[:] = [security.install]
from routerd.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="rds-", dir="/tmp"))
    sock = str(home / "routerd.sock")
    good = home / "good.gguf"
    good.write_bytes(b"GGUF good")
    (home / "config.toml").write_text(
        "[services.ollama]\nenabled = false\n"
        "[[security.model_checksums]]\n"
        f'path = "{good}"\nsha256 = "{hashlib.sha256(b"GGUF good").hexdigest()}"\n'
        'model = "good-model"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTERD_", "NOTIFY_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"),
               XDG_CONFIG_HOME=str(home / "cfg"))  # fmt: skip
    log = open(home / "routerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "--socket", sock, "--config", str(home / "config.toml")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                Client(sock, timeout=2, hello=False).close()
                break
            except DaemonUnreachable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"routerd did not start: {(home / 'routerd.log').read_text()}")
                time.sleep(0.05)
        yield Daemon(sock, home / "state" / "routerd", home)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_audit_tail(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--socket", daemon.socket, "audit", "tail", "-n", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3 and all(" #" in line for line in lines)
    code, out, _ = run(capsys, "--socket", daemon.socket, "--json", "audit", "tail", "-n", "2")
    assert code == 0 and [json.loads(x)["seq"] for x in out.splitlines()]


@pytest.mark.slow
def test_audit_verify_text_not_found(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("a query never sent\n"))
    code, out, _ = run(capsys, "--socket", daemon.socket, "audit", "verify", "-")
    assert code == 1 and out.startswith("not found")
    code, out, _ = run(capsys, "--socket", daemon.socket, "--json", "audit", "verify", "x")
    assert code == 1 and len(json.loads(out)["hash"]) == 64


@pytest.mark.slow
def test_verify_chain_through_the_daemon_and_offline(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--socket", daemon.socket, "audit", "verify-chain")
    assert code == 0 and out.startswith("intact:")
    key, log = daemon.state / "audit.key", daemon.state / "audit.log"
    code, out, _ = run(capsys, "audit", "verify-chain", "--key", str(key), "--log", str(log))
    assert code == 0 and out.startswith("intact:")
    copy = daemon.home / "copy"
    copy.mkdir()
    lines = log.read_bytes().splitlines(keepends=True)
    (copy / "audit.log").write_bytes(b"".join(lines[:1] + lines[2:]))
    code, out, _ = run(capsys, "audit", "verify-chain", "--key", str(key), "--log",
                       str(copy / "audit.log"))  # fmt: skip
    assert code == 1 and out.startswith("BROKEN") and "missing" in out
    (copy / "other.key").write_text("ab" * 32)
    code, out, _ = run(capsys, "audit", "verify-chain", "--key", str(copy / "other.key"),
                       "--log", str(log))  # fmt: skip
    assert code == 1 and "right key" in out
    code, _, err = run(capsys, "audit", "verify-chain", "--key", str(key))
    assert code == 2 and "--log" in err


@pytest.mark.slow
def test_verify_models(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--socket", daemon.socket, "verify")
    assert code == 0 and "OK       " in out and "good-model" in out


@pytest.mark.slow
def test_doctor(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--socket", daemon.socket, "--json", "doctor")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["socket mode and owner"]["status"] == "pass"
    assert checks["audit is on"]["status"] == "pass"
    assert checks["external names do not resolve"]["status"] == "unknown"  # no DNS query made
    assert "egress is blocked" in checks
    assert code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)
    code, out, _ = run(capsys, "--socket", daemon.socket, "doctor")
    assert "cannot tell" in out.splitlines()[-1]


def test_doctor_without_a_daemon(short_tmp: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--socket", f"{short_tmp}/none.sock", "doctor")
    assert "daemon checks" in out and "cannot ask routerd" in out


def test_default_route_detection(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    (net / "route").write_text(
        header + "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    (check, dns) = local_checks(connect=False, resolve=False, proc=tmp_path)
    assert check.status == "pass" and dns.status == "unknown"
    (net / "route").write_text(
        header + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    (check, _) = local_checks(connect=False, resolve=False, proc=tmp_path)
    assert check.status == "unknown" and "eth0" in check.detail and "--connect" in check.fix
    # No /proc (Windows, macOS): not a pass, unknown.
    (check, _) = local_checks(connect=False, resolve=False, proc=tmp_path / "none")
    assert check.status == "unknown" and "routing table" in check.detail


def test_format_record() -> None:
    line = json.dumps({"seq": 4, "timestamp": "T", "event_type": "query", "model": "m",
                       "uid": 1000, "tokens_in": 5, "tokens_out": 7, "query_hash": "ab"})  # fmt: skip
    assert format_record(line) == "T #4 query model=m uid=1000 tokens=5/7"
    assert format_record("not json") == "not json"
