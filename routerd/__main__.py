"""``routerd``: run the daemon. ``python -m routerd`` does the same.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 if the socket cannot be served
(another daemon is live on it, bad path, no permission), 2 for a bad command line or an invalid
configuration at start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from routerd import __version__
from routerd.core.config import LOG_LEVELS, ConfigError, default_config

__all__ = ["main"]

log = logging.getLogger("routerd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerd",
        description="Local LLM router daemon: serves editors and coding agents on a Unix socket.",
    )
    p.add_argument(
        "--config", metavar="PATH",
        help="configuration file (.toml or .yaml); default: $ROUTERD_CONFIG, "
        "~/.config/routerd/config.*, /etc/routerd/config.*, else built-in defaults",
    )
    p.add_argument(
        "--socket", metavar="PATH",
        help="Unix socket to serve; default: $ROUTERD_SOCKET, daemon.socket, "
        "$XDG_RUNTIME_DIR/routerd/routerd.sock, /run/routerd/routerd.sock",
    )
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)}; overrides daemon.log_level",
    )
    p.add_argument("--version", action="version", version=f"routerd {__version__}")
    return p


def _setup_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, format=fmt, level=level.upper(), force=True)


def _set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    log.info("log level is now %s", level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon until it is told to stop; return the process exit code."""
    from routerd.shell.app import App
    from routerd.shell.config_file import find_default_config, load_config_file
    from routerd.shell.features import install_features
    from routerd.shell.listener import SocketInUse, StartupError

    args = _parser().parse_args(argv)
    env = os.environ
    _setup_logging(args.log_level or "info")
    option = Path(args.config) if args.config else None
    try:
        path = option or find_default_config(env)
        config = load_config_file(path, env) if path is not None else default_config()
    except ConfigError as exc:
        print(f"routerd: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.log_level is None:
        logging.getLogger().setLevel(config.daemon.log_level.upper())
    app = App(
        config,
        config_path=path,
        config_option=option,
        socket_option=args.socket,
        env=env,
        on_log_level=None if args.log_level else _set_level,
    )
    install_features(app)
    try:
        trio.run(app.run)
    except SocketInUse as exc:
        print(f"routerd: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"routerd: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the signal handler was installed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
