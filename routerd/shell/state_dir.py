"""The daemon's state directory: where the audit log, its key and other lasting state live.

Order: ``daemon.state_dir`` in the configuration; systemd's ``$STATE_DIRECTORY`` (the first, if
it lists several); ``$XDG_STATE_HOME/routerd``; ``~/.local/state/routerd``; for root without a
home to speak of, ``/var/lib/routerd``. The directory is created 0700 if missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SYSTEM_STATE_DIR", "resolve_state_dir", "ensure_private_dir"]

SYSTEM_STATE_DIR = "/var/lib/routerd"


def resolve_state_dir(configured: str | None, env: Mapping[str, str], *, uid: int) -> Path:
    """The state directory to use (not created)."""
    if configured:
        return Path(os.path.expanduser(configured))
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


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; a directory we create is 0700."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    return path
