"""The daemon's state directory: where the audit log, its key and other lasting state live.

Order: ``daemon.state_dir`` in the configuration; systemd's ``$STATE_DIRECTORY`` (the first, if
it lists several); ``$XDG_STATE_HOME/routerd``; ``~/.local/state/routerd``; for root without a
home to speak of, ``/var/lib/routerd``. The directory is created 0700 if missing.

On Windows: ``daemon.state_dir``, else ``%LOCALAPPDATA%\\routerd`` (else
``%USERPROFILE%\\AppData\\Local\\routerd``), which is private by its ACL: the user's profile
admits that user, the administrators and SYSTEM, and new files inherit it. (Python 3.11.10,
3.12.4 and later also give a directory made with mode 0700 such an ACL of its own.)
"""

from __future__ import annotations

import ntpath
import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SYSTEM_STATE_DIR", "resolve_state_dir", "ensure_private_dir"]

SYSTEM_STATE_DIR = "/var/lib/routerd"


def resolve_state_dir(
    configured: str | None,
    env: Mapping[str, str],
    *,
    uid: int | None,
    platform: str = sys.platform,
) -> Path:
    """The state directory to use (not created). ``uid``: the daemon's (unused on Windows)."""
    if configured:
        return Path(os.path.expanduser(configured))
    if platform == "win32":
        return _windows_state_dir(env)
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd and os.path.isabs(systemd):
        return Path(systemd)
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "routerd"
    home = env.get("HOME")
    if uid == 0 and (not home or home == "/"):
        return Path(SYSTEM_STATE_DIR)
    if home and os.path.isabs(home):
        return Path(home) / ".local" / "state" / "routerd"
    return Path(SYSTEM_STATE_DIR)


def _windows_state_dir(env: Mapping[str, str]) -> Path:
    local = env.get("LOCALAPPDATA")
    if local and ntpath.isabs(local):
        return Path(local) / "routerd"
    profile = env.get("USERPROFILE")
    if profile and ntpath.isabs(profile):
        return Path(profile) / "AppData" / "Local" / "routerd"
    return Path.home() / "AppData" / "Local" / "routerd"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; a directory we create is 0700."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    return path
