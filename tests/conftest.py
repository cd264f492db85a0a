"""Test-suite-wide set-up.

- ``tests/`` is importable, so tests can ``import fakes``.
- The suite never touches the developer's own routerd files: state, configuration and runtime
  directories point into one temporary directory for the whole run (daemons started as
  subprocesses inherit it), and routerd's own environment variables are cleared.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

_SANDBOX: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SANDBOX
    _SANDBOX = tempfile.mkdtemp(prefix="routerd-tests-", dir="/tmp")
    for var, sub in (
        ("XDG_STATE_HOME", "state"),
        ("XDG_CONFIG_HOME", "config"),
    ):
        path = os.path.join(_SANDBOX, sub)
        os.makedirs(path, mode=0o700)
        os.environ[var] = path
    for var in ("ROUTERD_CONFIG", "ROUTERD_SOCKET", "STATE_DIRECTORY", "NOTIFY_SOCKET",
                "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        os.environ.pop(var, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SANDBOX is not None:
        shutil.rmtree(_SANDBOX, ignore_errors=True)
