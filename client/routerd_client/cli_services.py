"""routerctl commands for model servers: ``services``, ``models`` and ``watch``.

``services`` and ``models`` print tables (``--json``: the daemon's result as it came);
``watch`` prints one line per event until Ctrl-C (``--json``: one JSON object per line,
``{"event": ..., "data": ...}``). Like all of routerctl, this module imports neither trio nor
httpx.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ._sync import typed_result
from .cli import EXIT_OK, Context, command
from .protocol import (
    EventsSnapshot,
    ModelInfo,
    ModelsChange,
    ModelsListResult,
    ServiceChange,
    ServiceInfo,
    ServicesListResult,
)

__all__ = [
    "cmd_services",
    "cmd_models",
    "cmd_watch",
    "columns",
    "format_services",
    "format_models",
    "format_event",
]

_DASH = "-"


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under ``header``, two spaces apart, no trailing blanks."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return _DASH
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return _DASH
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_services(services: Sequence[ServiceInfo], summary: str = "") -> str:
    """The table of ``routerctl services``."""
    if not services:
        return "no services configured" + (f" ({summary})" if summary else "")
    rows = [
        (
            s.name,
            s.kind or _DASH,
            s.endpoint,
            s.state,
            _ms(s.latency_ms),
            str(s.models),
            ", ".join(s.loaded_models) or _DASH,
            _short(s.last_error),
        )
        for s in services
    ]
    header = ("NAME", "KIND", "ENDPOINT", "STATE", "LATENCY", "MODELS", "LOADED", "LAST ERROR")
    out = columns(header, rows)
    return f"{out}\n{summary}" if summary else out


def _context(m: ModelInfo) -> str:
    if m.context_length is None:
        return _DASH
    if m.context_source in (None, "server"):
        return str(m.context_length)
    return f"{m.context_length} ({m.context_source})"


def _loaded(value: bool | None) -> str:
    return _DASH if value is None else ("yes" if value else "no")


def format_models(models: Sequence[ModelInfo]) -> str:
    """The table of ``routerctl models``."""
    if not models:
        return "no models found (is a model server running? see `routerctl services`)"
    rows = [
        (m.id, m.service, _context(m), _loaded(m.loaded), "yes" if m.available else "no")
        for m in models
    ]
    return columns(("ID", "SERVICE", "CONTEXT", "LOADED", "AVAILABLE"), rows)


def _clock(ts: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts if ts is not None else time.time()))


def _service_line(s: ServiceInfo, previous: str | None) -> str:
    what = s.kind or "/".join(s.candidates) or _DASH
    change = s.state if previous is None else f"{previous} -> {s.state}"
    reason = f": {s.reason}" if s.reason else ""
    return f"{s.name} ({what} at {s.endpoint}) {change}{reason}"


def format_event(name: str, data: Any) -> list[str]:
    """The lines ``routerctl watch`` prints for one event (without the time)."""
    try:
        if name == "snapshot":
            snap = msgspec.convert(data, EventsSnapshot)
            lines = [f"now: {_service_line(s, None)}" for s in snap.services]
            return lines or ["now: no services configured"]
        if name == "service":
            change = msgspec.convert(data, ServiceChange)
            return [_service_line(change.service, change.previous)]
        if name == "models":
            mc = msgspec.convert(data, ModelsChange)
            parts = [*(f"+{i}" for i in mc.added), *(f"-{i}" for i in mc.removed),
                     *(f"~{i}" for i in mc.changed)]  # fmt: skip
            return [f"{mc.service} models {' '.join(parts)}"]
        if name == "service.removed" and isinstance(data, dict):
            return [f"{data.get('name')} removed by a configuration reload"]
    except msgspec.ValidationError:
        pass
    return [f"{name} {msgspec.json.encode(data).decode()}"]


@command("services", help="list the model servers routerd probes, their state and models")
def cmd_services(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("services.list")
    result = typed_result(raw, ServicesListResult, "services.list")
    ctx.emit(raw, format_services(result.services, result.summary))
    return EXIT_OK


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", metavar="NAME", help="only this service's models")
    p.add_argument("--available", action="store_true",
                   help="only models whose service takes requests now")


@command("models", help="list the models the model servers offer, with context lengths",
         arguments=_models_arguments)
def cmd_models(ctx: Context, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"available": args.available}
    if args.service:
        params["service"] = args.service
    with ctx.connect() as client:
        raw = client.call("models.list", params)
    result = typed_result(raw, ModelsListResult, "models.list")
    ctx.emit(raw, format_models(result.models))
    return EXIT_OK


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-snapshot", action="store_true",
                   help="do not start with the current state of every service")


@command("watch", help="print service and model changes as they happen, until Ctrl-C",
         arguments=_watch_arguments)
def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    try:
        with ctx.connect() as client, client.stream(
            "events.subscribe", {"snapshot": not args.no_snapshot}, timeout=None
        ) as events:
            for ev in events:
                if ctx.json:
                    line = msgspec.json.encode({"event": ev.event, "data": ev.data}).decode()
                    print(line, flush=True)
                    continue
                for text in format_event(ev.event, ev.data):
                    print(f"{_clock()}  {text}", flush=True)
    except KeyboardInterrupt:
        # Ctrl-C is how watching ends: not an error.
        print(file=sys.stderr)
    return EXIT_OK
