"""Reading configuration files: format by extension, default locations, relative paths.

The parsing and validation are pure (``routerd.core.config``); this module adds the file
system and the process environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from routerd.core.config import Config, ConfigError, parse_config, resolve_paths

__all__ = [
    "CONFIG_NAMES",
    "SYSTEM_CONFIG_DIR",
    "check_platform",
    "find_default_config",
    "load_config_file",
]

#: File extensions and the format each one means.
_FORMATS: dict[str, Literal["toml", "yaml"]] = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
#: File names looked for in each default directory, in order.
CONFIG_NAMES = ("config.toml", "config.yaml", "config.yml")
SYSTEM_CONFIG_DIR = Path("/etc/routerd")
#: A configuration file larger than this is refused unread (it is surely not one).
_MAX_SIZE = 4 * 1024 * 1024


def load_config_file(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    platform: str = sys.platform,
) -> Config:
    """Read, parse and validate the configuration file at ``path``.

    The format comes from the extension: ``.toml``, ``.yaml`` or ``.yml``. ``env`` supplies
    ``${VAR}`` values (default: the process environment). Relative paths inside the file are
    made absolute against the file's directory, and ``~/`` against ``$HOME``
    (see :func:`routerd.core.config.resolve_paths`).

    Raises :class:`ConfigError` for an unsupported extension, an unreadable file (with the
    operating system's reason), invalid UTF-8, every parse or validation problem, and settings
    that cannot apply on ``platform`` (:func:`check_platform`).
    """
    if env is None:
        env = os.environ
    p = Path(path)
    source = str(p)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        allowed = ", ".join(_FORMATS)
        raise ConfigError(
            f"unsupported file extension {p.suffix or '(none)'!r}: use one of {allowed}",
            source=source,
        )
    try:
        with p.open("rb") as f:
            data = f.read(_MAX_SIZE + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", source=source) from None
    if len(data) > _MAX_SIZE:
        raise ConfigError(f"file is larger than {_MAX_SIZE} bytes", source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not valid UTF-8 (byte offset {exc.start}): save the file as UTF-8", source=source
        ) from None
    config = parse_config(text, fmt=fmt, env=env, source=source)
    check_platform(config, platform, source=source)
    base = p.absolute().parent
    return resolve_paths(config, str(base), home=env.get("HOME") or None)


def check_platform(config: Config, platform: str, *, source: str = "<string>") -> None:
    """Raise :class:`ConfigError` for a setting that cannot apply on ``platform``.

    On Windows (``"win32"``): the named pipe admits only the user routerd runs as, so rules
    naming other Unix users and groups (``security.allowed_uids``, ``allowed_groups``,
    ``clients``, and a Serena workspace's ``uids`` and ``write_uids``) would be silently void
    or lock that user out: they are refused. So is ``http.unix_socket`` (Python has no Unix
    sockets there). ``daemon.socket_group`` is only warned about at start
    (``routerd.shell.transport``).
    """
    if platform != "win32":
        return
    s = config.security
    for key, value in (
        ("allowed_uids", s.allowed_uids),
        ("allowed_groups", s.allowed_groups),
        ("clients", s.clients),
    ):
        if value:
            raise ConfigError(
                "Unix users and groups do not apply on Windows: the named pipe admits only "
                "the user routerd runs as; remove this setting",
                source=source,
                path=f"$.security.{key}",
            )
    for i, entry in enumerate(config.serena.workspaces):
        if isinstance(entry, str):
            continue
        for key, uids in (("uids", entry.uids), ("write_uids", entry.write_uids)):
            if uids:
                raise ConfigError(
                    "Unix uids do not apply on Windows: every client is the user routerd runs "
                    "as, who may use any workspace it can read (and edit the writable ones); "
                    "remove this setting",
                    source=source,
                    path=f"$.serena.workspaces[{i}].{key}",
                )
    if config.http.unix_socket:
        raise ConfigError(
            "Unix sockets are not available on Windows; serve the HTTP front on "
            "http.listen (loopback TCP) and remove this setting",
            source=source,
            path="$.http.unix_socket",
        )


def find_default_config(
    env: Mapping[str, str] | None = None,
    *,
    system_dirs: Sequence[Path] = (SYSTEM_CONFIG_DIR,),
) -> Path | None:
    """The configuration file to use when none is named, or None to run on defaults.

    Order: ``$ROUTERD_CONFIG`` (returned as given, even if missing, so that loading it fails
    loudly rather than silently falling back); then ``$XDG_CONFIG_HOME/routerd/`` (or
    ``~/.config/routerd/``); then each of ``system_dirs`` (``/etc/routerd/``). In each directory
    ``config.toml``, ``config.yaml`` and ``config.yml`` are looked for.

    Raises :class:`ConfigError` when one directory holds more than one of them: which one is
    meant cannot be guessed.
    """
    if env is None:
        env = os.environ
    explicit = env.get("ROUTERD_CONFIG")
    if explicit:
        return Path(explicit)
    dirs: list[Path] = []
    xdg = env.get("XDG_CONFIG_HOME")
    home = env.get("HOME")
    if xdg and os.path.isabs(xdg):
        dirs.append(Path(xdg) / "routerd")
    elif home:
        dirs.append(Path(home) / ".config" / "routerd")
    dirs.extend(system_dirs)
    for directory in dirs:
        found = [directory / name for name in CONFIG_NAMES if (directory / name).is_file()]
        if len(found) > 1:
            names = " and ".join(f.name for f in found)
            raise ConfigError(f"both {names} exist; keep only one", source=str(directory))
        if found:
            return found[0]
    return None
