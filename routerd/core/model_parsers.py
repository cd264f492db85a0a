"""Parsers for what Ollama, OpenAI-compatible servers and llama.cpp say about their models.

``vendor_parsers`` holds the parsers of LM Studio, KoboldCpp, Open WebUI and
text-generation-webui; both share the types and helpers defined here.

Invariants:

* Every parser takes raw body bytes and returns a value or a ``ParseError``; none raises,
  whatever the bytes (a test fuzzes them all).
* Entries that cannot be understood (no string id) are skipped, not fatal: one odd entry
  must not hide the rest of a server's models. A body whose top level has the wrong shape
  is a ``ParseError``.
* Context lengths come only from what the server says here. ``context_length`` is the window
  a request may use now (a loaded instance's runtime size, vLLM's ``max_model_len``);
  ``max_context_length`` is the model's own limit (trained length, LM Studio's maximum).
  Guessing from names is ``discovery.resolve_context``'s job, and marked as such.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from routerd.core.jsonpick import (
    INVALID,
    decode_json,
    pick,
    pick_dict,
    pick_int,
    pick_list,
    pick_str,
)

__all__ = [
    "ContextSource",
    "DiscoveredModel",
    "ParseError",
    "OllamaShow",
    "LlamaCppProps",
    "SlotsInfo",
    "parse_ollama_version",
    "parse_ollama_tags",
    "parse_ollama_ps",
    "parse_ollama_show",
    "parse_openai_models",
    "parse_llamacpp_props",
    "parse_llamacpp_slots",
]

ContextSource = Literal["server", "name", "default"]


class DiscoveredModel(msgspec.Struct, frozen=True, omit_defaults=True):
    """One model a service can serve, as far as the service told us.

    ``None`` means "the server did not say", never zero. ``loaded`` is ``None`` when the API
    has no notion of loading (a plain ``/v1/models``). ``expires_at`` is epoch seconds.
    """

    id: str
    service: str
    context_length: int | None = None
    context_source: ContextSource | None = None
    max_context_length: int | None = None
    loaded: bool | None = None
    size_bytes: int | None = None
    size_vram: int | None = None
    expires_at: float | None = None
    capabilities: tuple[str, ...] = ()
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    digest: str | None = None
    state: str | None = None
    aliases: tuple[str, ...] = ()
    owned_by: str | None = None


class ParseError(msgspec.Struct, frozen=True):
    """A body the named parser could not read; ``message`` says what was wrong."""

    parser: str
    message: str


class OllamaShow(msgspec.Struct, frozen=True, omit_defaults=True):
    """What ``POST /api/show`` says about one model.

    ``context_length`` is the model's maximum (``model_info["<arch>.context_length"]``);
    ``num_ctx`` is the Modelfile's default runtime window, when it sets one.
    """

    context_length: int | None = None
    architecture: str | None = None
    capabilities: tuple[str, ...] = ()
    num_ctx: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None


class LlamaCppProps(msgspec.Struct, frozen=True, omit_defaults=True):
    """``GET /props`` of llama.cpp's server.

    ``media_marker`` is random per server process, so it tells two processes apart even when
    they run the same build on the same file.
    """

    n_ctx: int | None = None
    total_slots: int | None = None
    model_path: str | None = None
    model_alias: str | None = None
    build_info: str | None = None
    media_marker: str | None = None
    is_sleeping: bool | None = None
    vision: bool | None = None


class SlotsInfo(msgspec.Struct, frozen=True):
    """``GET /slots``: how many slots there are and how many are working now."""

    total: int
    processing: int
    n_ctx: int | None = None

    @property
    def all_busy(self) -> bool:
        return self.total > 0 and self.processing >= self.total


# --- Helpers shared with vendor_parsers (not part of the public surface) ------------------------


def decode_top(parser: str, body: bytes) -> Any:
    """The decoded body, or a ``ParseError`` naming the parser."""
    value = decode_json(body)
    if value is INVALID:
        preview = body[:40].decode("utf-8", "replace")
        return ParseError(parser, f"not JSON: {preview!r}")
    return value


def positive(value: int | None) -> int | None:
    """``value`` if it is a positive integer (a size, a window), else ``None``."""
    return value if value is not None and value > 0 else None


def strings(value: Any) -> tuple[str, ...]:
    """The non-empty strings of a JSON list, deduplicated in order; ``()`` for anything else."""
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(v for v in value if isinstance(v, str) and v))


def _epoch(text: str | None) -> float | None:
    """RFC 3339 timestamp to epoch seconds; ``None`` for bad or pre-1970 values.

    A timestamp without an offset is read as UTC, never as the machine's local time.
    """
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return seconds if seconds >= 0 else None


def list_at(parser: str, body: bytes, key: str) -> list[Any] | ParseError:
    """The list under ``key`` of a JSON object body, or a ``ParseError``."""
    value = decode_top(parser, body)
    if isinstance(value, ParseError):
        return value
    items = pick_list(value, key)
    if items is None:
        return ParseError(parser, f"no {key!r} list")
    return items


# --- Ollama ------------------------------------------------------------------------------------


def parse_ollama_version(body: bytes) -> str | ParseError:
    """``GET /api/version`` -> ``{"version": "0.5.1"}``."""
    value = decode_top("ollama_version", body)
    if isinstance(value, ParseError):
        return value
    version = pick_str(value, "version")
    return version if version else ParseError("ollama_version", "no 'version' string")


class OllamaDetails(msgspec.Struct, frozen=True):
    family: str | None
    parameter_size: str | None
    quantization: str | None


def ollama_details(entry: Any) -> OllamaDetails:
    """Ollama's ``details`` block (family, parameter size, quantisation level)."""
    return OllamaDetails(
        pick_str(entry, "details", "family") or None,
        pick_str(entry, "details", "parameter_size") or None,
        pick_str(entry, "details", "quantization_level") or None,
    )


def _ollama_name(entry: Any) -> str | None:
    return pick_str(entry, "name") or pick_str(entry, "model") or None


def parse_ollama_tags(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """``GET /api/tags``: every local model (no context lengths; ``/api/show`` has those)."""
    items = list_at("ollama_tags", body, "models")
    if isinstance(items, ParseError):
        return items
    out: list[DiscoveredModel] = []
    for entry in items:
        name = _ollama_name(entry)
        if name is None:
            continue
        out.append(
            DiscoveredModel(
                id=name,
                service=service,
                size_bytes=positive(pick_int(entry, "size")),
                digest=pick_str(entry, "digest") or None,
                capabilities=strings(pick(entry, "capabilities")),
                family=(d := ollama_details(entry)).family,
                parameter_size=d.parameter_size,
                quantization=d.quantization,
            )
        )
    return tuple(out)


def parse_ollama_ps(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """``GET /api/ps``: models in memory now, with ``size_vram`` (less than ``size`` means
    partly on CPU), ``expires_at`` and the runtime ``context_length``."""
    items = list_at("ollama_ps", body, "models")
    if isinstance(items, ParseError):
        return items
    out: list[DiscoveredModel] = []
    for entry in items:
        name = _ollama_name(entry)
        if name is None:
            continue
        ctx = positive(pick_int(entry, "context_length"))
        vram = pick_int(entry, "size_vram")
        out.append(
            DiscoveredModel(
                id=name,
                service=service,
                loaded=True,
                context_length=ctx,
                context_source="server" if ctx is not None else None,
                size_bytes=positive(pick_int(entry, "size")),
                size_vram=vram if vram is not None and vram >= 0 else None,
                expires_at=_epoch(pick_str(entry, "expires_at")),
                digest=pick_str(entry, "digest") or None,
                family=(d := ollama_details(entry)).family,
                parameter_size=d.parameter_size,
                quantization=d.quantization,
            )
        )
    return tuple(out)


_NUM_CTX: Final = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


def parse_ollama_show(body: bytes) -> OllamaShow | ParseError:
    """``POST /api/show``: the context length from ``model_info["<arch>.context_length"]``.

    Falls back to any ``*.context_length`` key (LocalAI's Ollama emulation writes
    ``general.context_length``).
    """
    value = decode_top("ollama_show", body)
    if isinstance(value, ParseError):
        return value
    if not isinstance(value, dict):
        return ParseError("ollama_show", "not a JSON object")
    info = pick_dict(value, "model_info") or {}
    arch = pick_str(info, "general.architecture") or None
    ctx = positive(pick_int(info, f"{arch}.context_length")) if arch else None
    if ctx is None:
        for key in sorted(info):
            if key.endswith(".context_length"):
                ctx = positive(pick_int(info, key))
                if ctx is not None:
                    break
    num_ctx = None
    parameters = pick_str(value, "parameters")
    if parameters:
        match = _NUM_CTX.search(parameters)
        if match and len(match.group(1)) < 10:
            num_ctx = positive(int(match.group(1)))
    details = ollama_details(value)
    return OllamaShow(
        context_length=ctx,
        architecture=arch,
        capabilities=strings(pick(value, "capabilities")),
        num_ctx=num_ctx,
        family=details.family,
        parameter_size=details.parameter_size,
        quantization=details.quantization,
    )


# --- OpenAI-compatible -------------------------------------------------------------------------

_ROUTER_LOADED: Final = {
    "loaded": True,
    "unloaded": False,
    "sleeping": False,
    "loading": False,
    "downloading": False,
}


def parse_openai_models(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """``GET /v1/models`` with each vendor's extras.

    vLLM: ``max_model_len`` (the server-enforced window). llama.cpp: ``meta.n_ctx`` (runtime
    window per slot) and ``meta.n_ctx_train``; router mode adds ``status.value``; its
    Ollama-style ``models`` list beside ``data`` carries ``capabilities``. Other servers:
    ids only, plus ``context_length`` where a server volunteers one.
    """
    value = decode_top("openai_models", body)
    if isinstance(value, ParseError):
        return value
    items = pick_list(value, "data")
    if items is None:
        return ParseError("openai_models", "no 'data' list")
    capabilities: dict[str, tuple[str, ...]] = {}
    for entry in pick_list(value, "models") or ():
        name = _ollama_name(entry)
        if name is not None:
            capabilities[name] = strings(pick(entry, "capabilities"))
    out: list[DiscoveredModel] = []
    for entry in items:
        model_id = pick_str(entry, "id")
        if not model_id:
            continue
        owner = pick_str(entry, "owned_by") or None
        runtime = (
            positive(pick_int(entry, "max_model_len"))
            or positive(pick_int(entry, "meta", "n_ctx"))
            or positive(pick_int(entry, "context_length"))
        )
        trained = positive(pick_int(entry, "meta", "n_ctx_train")) or runtime
        status = pick_str(entry, "status", "value")
        loaded: bool | None = _ROUTER_LOADED.get(status) if status else None
        if loaded is None and status is None and owner in ("vllm", "llamacpp"):
            loaded = True  # single-model servers serve exactly what they list
        out.append(
            DiscoveredModel(
                id=model_id,
                service=service,
                context_length=runtime,
                context_source="server" if runtime is not None else None,
                max_context_length=trained,
                loaded=loaded,
                size_bytes=positive(pick_int(entry, "meta", "size")),
                capabilities=capabilities.get(model_id, ()),
                quantization=pick_str(entry, "meta", "ftype") or None,
                state=status or None,
                aliases=tuple(a for a in strings(pick(entry, "aliases")) if a != model_id),
                owned_by=owner,
            )
        )
    return tuple(out)


def parse_llamacpp_props(body: bytes) -> LlamaCppProps | ParseError:
    """llama.cpp ``GET /props``: runtime ``n_ctx``, ``total_slots``, build and model path."""
    value = decode_top("llamacpp_props", body)
    if isinstance(value, ParseError):
        return value
    if not isinstance(value, dict):
        return ParseError("llamacpp_props", "not a JSON object")
    sleeping = pick(value, "is_sleeping")
    vision = pick(value, "modalities", "vision")
    return LlamaCppProps(
        n_ctx=positive(pick_int(value, "default_generation_settings", "n_ctx")),
        total_slots=positive(pick_int(value, "total_slots")),
        model_path=pick_str(value, "model_path") or None,
        model_alias=pick_str(value, "model_alias") or None,
        build_info=pick_str(value, "build_info") or None,
        media_marker=pick_str(value, "media_marker") or None,
        is_sleeping=sleeping if isinstance(sleeping, bool) else None,
        vision=vision if isinstance(vision, bool) else None,
    )


def parse_llamacpp_slots(body: bytes) -> SlotsInfo | ParseError:
    """llama.cpp ``GET /slots``: a list of slots with ``is_processing`` and ``n_ctx``."""
    value = decode_top("llamacpp_slots", body)
    if isinstance(value, ParseError):
        return value
    if not isinstance(value, list):
        return ParseError("llamacpp_slots", "not a JSON list")
    slots = [s for s in value if isinstance(s, dict)]
    busy = sum(1 for s in slots if pick(s, "is_processing") is True)
    sizes = [n for s in slots if (n := positive(pick_int(s, "n_ctx"))) is not None]
    return SlotsInfo(total=len(slots), processing=busy, n_ctx=min(sizes) if sizes else None)
