"""The systemd units: `systemd-analyze verify` is silent on them, `security --offline` rates the
service "OK" or better, and the settings the daemon relies on are there.

`verify` only warns on most mistakes (an unknown key, a bad time span) and still exits 0, so any
output at all is a failure here. Needs Debian's ``systemd`` package (not a running systemd).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
ANALYZE = shutil.which("systemd-analyze")

#: Exposure ratings `systemd-analyze security` may give the service.
GOOD_RATINGS = ("PERFECT", "SAFE", "OK")



def _analyze(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    if ANALYZE is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package (setup.sh)")
    proc = subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    return proc.stdout + proc.stderr + ("" if proc.returncode == 0 else f"\n(exit {proc.returncode})")


def _stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def system_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root with systemd's own units (sysinit.target...), ours, and the binaries they run."""
    root = tmp_path_factory.mktemp("root")
    units = root / "usr/lib/systemd/system"
    shutil.copytree(SYSTEM_UNITS, units, symlinks=True)
    for unit in ("routerd.service", "routerd.socket"):
        shutil.copy(UNITS / unit, units / unit)
    _stub(root / "opt/routerd/bin/routerd")
    _stub(root / "opt/routerd/bin/routerctl")
    yield root


def test_system_units_verify_silently(system_root):
    out = _analyze("verify", f"--root={system_root}", "routerd.service", "routerd.socket")
    assert out == ""


def test_verify_does_report_a_mistake(system_root, tmp_path):
    """The check above can fail: a misspelt key is reported (though verify still exits 0)."""
    unit = system_root / "usr/lib/systemd/system/routerd-typo.service"
    text = (UNITS / "routerd.service").read_text().replace("ProtectSystem=", "ProtectSystm=")
    unit.write_text(text)
    try:
        out = _analyze("verify", f"--root={system_root}", "routerd-typo.service")
    finally:
        unit.unlink()
    assert "Unknown key 'ProtectSystm'" in out


def test_user_units_verify_silently(tmp_path):
    home, run, units = tmp_path / "home", tmp_path / "run", tmp_path / "units"
    run.mkdir(mode=0o700)
    shutil.copytree(UNITS / "user", units)
    _stub(home / ".local/bin/routerd")
    _stub(home / ".local/bin/routerctl")
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(run), "PATH": "/usr/bin:/bin"}
    out = _analyze("--user", "verify", "./routerd.service", "./routerd.socket", env=env, cwd=units)
    assert out == ""


def test_security_exposure_is_ok_or_better(system_root):
    out = _analyze("security", "--offline=yes", f"--root={system_root}", "routerd.service")
    match = re.search(r"Overall exposure level for routerd\.service: ([\d.]+) (\w+)", out)
    assert match, out
    assert match.group(2) in GOOD_RATINGS, out[-2000:]
    assert float(match.group(1)) <= 4.9


def _settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_service_keeps_the_settings_the_daemon_relies_on():
    s = _settings(UNITS / "routerd.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"] and s["WatchdogSec"]
    assert s["ExecReload"] == ["/opt/routerd/bin/routerctl reload"]
    assert s["StateDirectory"] == ["routerd"] and s["RuntimeDirectory"] == ["routerd"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]  # the socket unit's file lives there
    assert s["ProtectSystem"] == ["strict"]
    assert s["NoNewPrivileges"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["IPAddressDeny"] == ["any"] and s["IPAddressAllow"] == ["localhost"]
    assert "@system-service" in s["SystemCallFilter"]
    assert s["CapabilityBoundingSet"] == [""]
    assert "MemoryDenyWriteExecute" not in s  # breaks node, so Serena's pyright


def test_the_sockets_share_the_paths_the_clients_look_at():
    system = _settings(UNITS / "routerd.socket")
    user = _settings(UNITS / "user" / "routerd.socket")
    assert system["ListenStream"] == ["/run/routerd/routerd.sock"]  # paths.SYSTEM_SOCKET
    assert system["SocketMode"] == ["0660"] and system["SocketGroup"] == ["routerd"]
    assert user["ListenStream"] == ["%t/routerd/routerd.sock"]  # $XDG_RUNTIME_DIR/routerd/...
    assert user["SocketMode"] == ["0600"]
