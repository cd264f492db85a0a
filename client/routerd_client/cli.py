"""routerctl: the command line of routerd.

``routerctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND``. The global options may also
follow the command (``routerctl status --json``).

Exit codes (the contract scripts rely on):

* 0: done.
* 1: the daemon answered with an error (one line: its code and message), or the operation failed
  in some other definite way (``config check`` found the file invalid; the daemon broke the
  protocol).
* 2: usage error (bad arguments), or a package a command needs is missing.
* 3: the daemon is not reachable: nothing listens on the socket, the connection was lost, or no
  answer came within ``--timeout``. The line says how to start it.

``routerctl version`` exits 0 even when the daemon is not reachable: it reports what is
installed, including when the daemon will not start; use ``ping`` or ``status`` to test the
daemon.

Every error is one line on stderr, never a traceback (``ROUTERCTL_DEBUG=1`` shows it). With
``--json`` everything, errors included, goes to stdout as JSON; an error is
``{"error": {"code": ..., "message": ...}}``.

Adding a command: write ``def cmd_x(ctx: Context, args: argparse.Namespace) -> int`` and
decorate it with ``@command("x", help=...)`` (``arguments=`` adds its options; a name with a
space, ``"config check"``, makes a command group). This module must not import trio or httpx:
``routerctl`` start-up time is a benchmark figure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, NoReturn

import msgspec

from ._sync import Client, typed_result
from ._version import __version__
from .errors import (
    ConnectionLost,
    DaemonUnreachable,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
)
from .paths import SOCKET_ENV, default_socket_path
from .protocol import PROTOCOL_VERSION, HelloResult, ReloadResult, StatusResult

__all__ = ["main", "command", "Context", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNREACHABLE"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

DEFAULT_TIMEOUT: Final = 10.0
START_HINT: Final = "Start it with `routerd` or `systemctl --user start routerd`."


# --- command registry ------------------------------------------------------------------------


class Command(NamedTuple):
    name: tuple[str, ...]
    help: str
    run: Callable[[Context, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None


_COMMANDS: list[Command] = []

#: Modules (relative to this package) whose ``@command`` functions extend routerctl; each
#: feature keeps its subcommands in its own module and adds one name here. They are imported
#: when the parser is built and must not import trio or httpx either.
COMMAND_MODULES: Final[tuple[str, ...]] = (
    "cli_services", "cli_serena", "cli_security", "cli_route", "cli_sessions", "cli_stats",
    "cli_top",
)

#: Help lines of command groups (the first word of a multi-word command).
GROUPS: dict[str, str] = {"config": "work with configuration files"}

Runner = Callable[["Context", argparse.Namespace], int]


def command(
    name: str,
    *,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Callable[[Runner], Runner]:
    """Register a subcommand: ``name`` (words separated by spaces), its one-line ``help``, and
    optionally a function adding its arguments. The decorated function returns the exit code."""

    def register(run: Runner) -> Runner:
        _COMMANDS.append(Command(tuple(name.split()), help, run, arguments))
        return run

    return register


# --- context and output ----------------------------------------------------------------------


class Context:
    """What a command needs: the global options, a way to connect, and output helpers."""

    def __init__(self, *, socket: str | None, json: bool, timeout: float) -> None:
        self.json = json
        self.timeout = timeout
        self._socket = socket

    @property
    def socket(self) -> str:
        """The socket path: ``--socket``, else :func:`default_socket_path`."""
        if self._socket is None:
            self._socket = default_socket_path()
        return self._socket

    def connect(self) -> Client:
        """A :class:`Client` that has said ``hello``. Raises :class:`DaemonUnreachable`."""
        return Client(
            self.socket, timeout=self.timeout, client_name="routerctl", client_version=__version__
        )

    def emit(self, data: Any, text: str) -> None:
        """Print ``data`` as JSON under ``--json``, else ``text``."""
        if self.json:
            print_json(data)
        else:
            print(text)

    def fail(self, code: str, message: str, exit_code: int, hint: str | None = None) -> int:
        """Report an error (one line on stderr, or JSON on stdout) and return ``exit_code``."""
        if self.json:
            print_json({"error": {"code": code, "message": message}})
        else:
            line = f"routerctl: {message}"
            if hint:
                line += f". {hint}"
            print(line, file=sys.stderr)
        return exit_code


def print_json(data: Any) -> None:
    text = msgspec.json.format(msgspec.json.encode(data), indent=2).decode()
    print(text)


def table(rows: Sequence[tuple[str, str]], indent: str = "") -> str:
    """Two aligned columns."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}".rstrip() for k, v in rows)


def human_duration(seconds: float) -> str:
    """``42s``, ``12m 03s``, ``3h 04m``, ``2d 03h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _scalar(value: Any) -> str:
    """A string as it is; anything else as compact JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _counts(mapping: dict[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{mapping.get(key, 0)} {label}" for key, label in keys)


# --- commands --------------------------------------------------------------------------------


@command("status", help="show the daemon's state: version, uptime, configuration, counters")
def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("status")
    st = typed_result(raw, StatusResult, "status")
    if ctx.json:
        print_json(raw)
        return EXIT_OK
    print(format_status(st))
    return EXIT_OK


def format_status(st: StatusResult) -> str:
    """The human table of ``routerctl status``."""
    reload = st.last_reload
    if reload is None:
        reload_text = "never"
    else:
        at = reload.get("at")
        when = local_time(at) if isinstance(at, (int, float)) else "?"
        ok = reload.get("ok")
        reload_text = f"{when}, ok" if ok else f"{when}, failed: {reload.get('error')}"
    errors = ", ".join(f"{code} {n}" for code, n in sorted(st.errors.items()) if n) or "none"
    rows = [
        ("version", st.version),
        ("pid", str(st.pid)),
        ("uptime", f"{human_duration(st.uptime_s)} (since {local_time(st.started_at)})"),
        ("socket", st.socket),
        ("config", st.config_path or "built-in defaults"),
        ("generation", str(st.config_generation)),
        ("last reload", reload_text),
        ("connections", _counts(st.connections, (("open", "open"), ("total", "total"),
                                                 ("refused", "refused")))),
        ("requests", _counts(st.requests, (("total", "total"), ("in_flight", "in flight"),
                                           ("failed", "failed"), ("cancelled", "cancelled")))),
        ("errors", errors),
    ]
    out = table(rows)
    if st.components:
        comp_rows = []
        for name, value in sorted(st.components.items()):
            if isinstance(value, dict):
                text = ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
            else:
                text = _scalar(value)
            comp_rows.append((name, text))
        out += "\ncomponents\n" + table(comp_rows, indent="  ")
    return out


def _ping_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--count", type=_positive_int, default=1, metavar="N",
                   help="send N pings (default 1)")


@command("ping", help="check the daemon answers; print the round-trip time",
         arguments=_ping_arguments)
def cmd_ping(ctx: Context, args: argparse.Namespace) -> int:
    rtts: list[float] = []
    with ctx.connect() as client:
        for _ in range(args.count):
            t0 = time.perf_counter()
            client.ping()
            rtts.append((time.perf_counter() - t0) * 1000.0)
    lo, hi, avg = min(rtts), max(rtts), sum(rtts) / len(rtts)
    if len(rtts) == 1:
        text = f"pong from routerd at {ctx.socket} in {rtts[0]:.3f} ms"
    else:
        text = (f"{len(rtts)} pongs from routerd at {ctx.socket}: "
                f"min {lo:.3f} / avg {avg:.3f} / max {hi:.3f} ms")
    ctx.emit({"socket": ctx.socket, "count": len(rtts), "rtt_ms": rtts,
              "min_ms": lo, "avg_ms": avg, "max_ms": hi}, text)
    return EXIT_OK


@command("reload", help="re-read and apply the daemon's configuration file")
def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("config.reload")
    result = typed_result(raw, ReloadResult, "config.reload")
    source = result.config_path or "built-in defaults"
    if result.changed:
        text = f"configuration reloaded from {source}: generation {result.generation}"
    else:
        text = f"configuration reloaded from {source}: no changes (generation {result.generation})"
    ctx.emit(raw, text)
    return EXIT_OK


@command("version", help="show routerctl's version and, if it is reachable, the daemon's")
def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    proto = ".".join(map(str, PROTOCOL_VERSION))
    mine = {"name": "routerctl", "version": __version__, "protocol": list(PROTOCOL_VERSION)}
    daemon: dict[str, Any] | None = None
    problem: dict[str, str] | None = None
    exit_code = EXIT_OK
    try:
        with ctx.connect() as client:
            hello = client.hello_result
        assert isinstance(hello, HelloResult)
        daemon = {"name": hello.daemon, "version": hello.version,
                  "protocol": list(hello.protocol), "socket": ctx.socket}
        their = f"{hello.version} (protocol {'.'.join(map(str, hello.protocol))}) at {ctx.socket}"
    except (DaemonUnreachable, ConnectionLost, RequestTimeout) as exc:
        reason = exc.reason if isinstance(exc, DaemonUnreachable) else str(exc)
        problem = {"code": "unreachable", "message": str(exc)}
        their = f"not reachable at {ctx.socket}: {reason}"
    except RemoteError as exc:
        problem = {"code": exc.code, "message": exc.message}
        their = f"answered with an error at {ctx.socket}: {exc}"
        exit_code = EXIT_ERROR
    ctx.emit({"client": mine, "daemon": daemon, "daemon_error": problem},
             table([("routerctl", f"{__version__} (protocol {proto})"), ("routerd", their)]))
    return exit_code


def _config_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", nargs="?",
                   help="the file to check (default: the one routerd would load)")


@command("config check", help="validate a configuration file (no daemon needed)",
         arguments=_config_check_arguments)
def cmd_config_check(ctx: Context, args: argparse.Namespace) -> int:
    try:
        # Imported here, and by name: routerctl needs only routerd-client; the check needs
        # routerd itself, whose own loader is the one definition of a valid file.
        config_error: type[Exception] = importlib.import_module("routerd.core.config").ConfigError
        config_file = importlib.import_module("routerd.shell.config_file")
    except ImportError as exc:
        from importlib.util import find_spec

        if find_spec("routerd") is None:
            return ctx.fail("not_installed", "config check needs the routerd package, which is "
                            "not installed here (install routerd, then run it again)", EXIT_USAGE)
        return ctx.fail("not_installed", f"routerd is installed but cannot be loaded ({exc})",
                        EXIT_USAGE)
    try:
        if args.path is None:
            found = config_file.find_default_config()
            if found is None:
                ctx.emit({"ok": True, "path": None},
                         "no configuration file found: routerd runs on built-in defaults")
                return EXIT_OK
            args.path = str(found)
        path: str = args.path
        config_file.load_config_file(path)
    except config_error as exc:
        return ctx.fail("bad_config", str(exc), EXIT_ERROR)
    except OSError as exc:
        return ctx.fail("bad_config", f"cannot read {args.path}: {exc.strerror or exc}",
                        EXIT_ERROR)
    ctx.emit({"ok": True, "path": path}, f"{path}: ok")
    return EXIT_OK


# --- parser and main ---------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("routerctl").strip()
        raise _UsageError(f"{where}: {message}" if where else message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On subcommands the defaults are suppressed, so an option given before the command is not
    # overwritten by the subparser's default.
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--socket", metavar="PATH", default=d(None),
                   help=f"the daemon's socket (default: ${SOCKET_ENV}, else the per-user or "
                        "system socket)")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print machine-readable JSON on stdout")
    p.add_argument("--timeout", metavar="SECONDS", type=_positive_float,
                   default=d(DEFAULT_TIMEOUT),
                   help=f"how long to wait for the daemon (default {DEFAULT_TIMEOUT:g})")


EPILOG: Final = (
    "exit codes: 0 ok, 1 the daemon answered with an error, 2 usage error, "
    "3 the daemon is not reachable"
)


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = _Parser(prog="routerctl", description="Control and query the routerd daemon.",
                     epilog=EPILOG)
    _global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"routerctl {__version__}")
    top = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction[_Parser]] = {}
    for cmd in _COMMANDS:
        where = top
        for word in cmd.name[:-1]:
            if word not in groups:
                gp = where.add_parser(word, help=GROUPS.get(word, ""), description=GROUPS.get(word))
                _global_options(gp, suppress=True)
                gp.set_defaults(_group=word)
                groups[word] = gp.add_subparsers(title="commands", metavar="COMMAND")
            where = groups[word]
        sub = where.add_parser(cmd.name[-1], help=cmd.help, description=cmd.help, epilog=EPILOG)
        _global_options(sub, suppress=True)
        if cmd.arguments is not None:
            cmd.arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def _group_choices(group: str) -> str:
    return ", ".join(" ".join(c.name[1:]) for c in _COMMANDS if c.name[0] == group)


def main(argv: Sequence[str] | None = None) -> int:
    """Run routerctl with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    usage = Context(socket=None, json=wants_json, timeout=DEFAULT_TIMEOUT)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return usage.fail("usage", f"{exc} (see routerctl --help)", EXIT_USAGE)
    except SystemExit as exc:  # --help and --version print and "exit"
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run = getattr(args, "_run", None)
    if run is None:
        group = getattr(args, "_group", None)
        if group is not None:
            return usage.fail("usage", f"choose a `{group}` command: {_group_choices(group)} "
                              "(see routerctl --help)", EXIT_USAGE)
        if not wants_json:
            parser.print_help(sys.stderr)
        return usage.fail("usage", "choose a command (see routerctl --help)", EXIT_USAGE)
    ctx = Context(socket=args.socket, json=args.json, timeout=args.timeout)
    try:
        result: int = run(ctx, args)
        return result
    except DaemonUnreachable as exc:
        hint = START_HINT
        if exc.reason == "permission denied":
            hint = ("Your user may not use this socket: ask for the daemon's group, or start "
                    "your own with `routerd`.")
        return ctx.fail("unreachable", str(exc), EXIT_UNREACHABLE, hint)
    except ConnectionLost as exc:
        return ctx.fail("connection_lost", f"lost the connection to routerd at {ctx.socket}: "
                        f"{exc}", EXIT_UNREACHABLE)
    except RequestTimeout as exc:
        return ctx.fail("client_timeout", f"{exc} (routerd at {ctx.socket}, waited "
                        f"{ctx.timeout:g}s; see --timeout)", EXIT_UNREACHABLE)
    except RemoteError as exc:
        return ctx.fail(exc.code, str(exc), EXIT_ERROR)
    except ProtocolViolation as exc:
        return ctx.fail("protocol_violation", str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return ctx.fail("interrupted", "interrupted", 130)
    except BrokenPipeError:
        # stdout went away (`routerctl status | head -1`): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("ROUTERCTL_DEBUG"):
            raise
        return ctx.fail("internal", f"unexpected error ({type(exc).__name__}: {exc}); this is a "
                        "bug in routerctl (ROUTERCTL_DEBUG=1 shows the traceback)", EXIT_ERROR)


if __name__ == "__main__":
    # Run the package's copy of this module: the command modules register their commands
    # there (``from .cli import command``), not on ``__main__``.
    from routerd_client.cli import main as _main

    sys.exit(_main())
