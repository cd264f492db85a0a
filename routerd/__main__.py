"""``routerd``: run the daemon. ``python -m routerd`` does the same.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT; on Windows Ctrl+C/Ctrl+Break), 1 if the
socket (on Windows: the named pipe) cannot be served (another daemon is live on it, bad path, no
permission), 2 for a bad command line or an invalid configuration at start.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from routerd import __version__
from routerd.core.config import LOG_LEVELS, Config, ConfigError, default_config

__all__ = ["main"]

log = logging.getLogger("routerd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerd",
        description="Local LLM router daemon: serves editors and coding agents on a Unix socket "
        "(on Windows: a named pipe).",
    )
    p.add_argument(
        "--config", metavar="PATH",
        help="configuration file (.toml or .yaml); default: $ROUTERD_CONFIG, "
        "~/.config/routerd/config.*, /etc/routerd/config.*, else built-in defaults",
    )
    p.add_argument(
        "--socket", metavar="PATH",
        help="Unix socket to serve; default: $ROUTERD_SOCKET, daemon.socket, "
        "$XDG_RUNTIME_DIR/routerd/routerd.sock, /run/routerd/routerd.sock "
        "(on Windows a named pipe, default \\\\.\\pipe\\routerd)",
    )
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)}; overrides daemon.log_level",
    )
    p.add_argument(
        "--print-ip-allow", action="store_true",
        help="print a systemd drop-in whose IPAddressAllow= admits the configured networks, "
        "and exit",
    )
    p.add_argument("--version", action="version", version=f"routerd {__version__}")
    return p


def _set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    log.info("log level is now %s", level)


def _print_ip_allow(config: Config, path: Path | None) -> int:
    from routerd.core.service_manager import ip_allow_drop_in

    text, warnings = ip_allow_drop_in(config, str(path) if path is not None else None)
    for warning in warnings:
        print(f"routerd: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


#: Seconds after READY when what the warm-ups loaded is frozen too.
_WARM_UP = 60.0


async def _freeze_heap(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Move what is loaded once the daemon is up, and again after the warm-ups, out of the
    cyclic collector's way: modules, the model database and the configuration live as long
    as the daemon, and a full collection walking through them stalls every request in flight
    for tens of milliseconds, every few thousand requests (bench/route.py, open loop)."""
    task_status.started()
    gc.collect()
    gc.freeze()
    await trio.sleep(_WARM_UP)
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon until it is told to stop; return the process exit code."""
    from routerd.shell.app import App
    from routerd.shell.config_file import find_default_config, load_config_file
    from routerd.shell.features import install_features
    from routerd.shell.logs import setup_logging
    from routerd.shell.transport import SocketInUse, StartupError

    args = _parser().parse_args(argv)
    env = os.environ
    setup_logging(args.log_level or "info", env=env)
    option = Path(args.config) if args.config else None
    try:
        path = option or find_default_config(env)
        config = load_config_file(path, env) if path is not None else default_config()
    except ConfigError as exc:
        # A security event (config_rejected). The audit log is not open yet: under systemd it
        # goes to the journal with its fields; elsewhere it is the one line on stderr.
        from routerd.shell.logs import event, use_journal

        if use_journal(env, sys.stderr):
            log.error(
                "invalid configuration: %s", exc, extra=event("security", kind="config_rejected")
            )
        else:
            print(f"routerd: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.print_ip_allow:
        return _print_ip_allow(config, path)
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
    app.add_service("heap", _freeze_heap, before_ready=False)
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
