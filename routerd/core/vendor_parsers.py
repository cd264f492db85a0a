"""Parsers for LM Studio, KoboldCpp, Open WebUI and text-generation-webui model answers.

Invariants: those of ``model_parsers`` (never raise; skip entries without an id; context
lengths only from what the server says).
"""

from __future__ import annotations

from typing import Final

from routerd.core.jsonpick import pick, pick_dict, pick_int, pick_list, pick_str
from routerd.core.model_parsers import (
    DiscoveredModel,
    ParseError,
    decode_top,
    list_at,
    ollama_details,
    positive,
)

__all__ = [
    "parse_lmstudio_v0",
    "parse_lmstudio_v1",
    "parse_kobold_version",
    "parse_kobold_model",
    "parse_kobold_max_context",
    "parse_openwebui_models",
    "parse_textgen_model_info",
]

# --- LM Studio ---------------------------------------------------------------------------------

_LMS_TYPE_CAPS: Final = {
    "llm": ("completion",),
    "vlm": ("completion", "vision"),
    "embeddings": ("embedding",),
    "embedding": ("embedding",),
}


def parse_lmstudio_v0(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """LM Studio ``GET /api/v0/models``: ``state`` (loaded / not-loaded), ``max_context_length``.

    The window of a model LM Studio loads on demand may be smaller than its maximum; only
    ``/api/v1/models`` reports the loaded instance's size.
    """
    items = list_at("lmstudio_v0", body, "data")
    if isinstance(items, ParseError):
        return items
    out: list[DiscoveredModel] = []
    for entry in items:
        model_id = pick_str(entry, "id")
        if not model_id:
            continue
        state = pick_str(entry, "state") or None
        out.append(
            DiscoveredModel(
                id=model_id,
                service=service,
                max_context_length=positive(pick_int(entry, "max_context_length")),
                loaded=None if state is None else state == "loaded",
                capabilities=_LMS_TYPE_CAPS.get(pick_str(entry, "type") or "", ()),
                family=pick_str(entry, "arch") or None,
                quantization=pick_str(entry, "quantization") or None,
                state=state,
                owned_by=pick_str(entry, "publisher") or None,
            )
        )
    return tuple(out)


def parse_lmstudio_v1(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """LM Studio 0.4+ ``GET /api/v1/models``: ``loaded_instances[].config.context_length``."""
    items = list_at("lmstudio_v1", body, "models")
    if isinstance(items, ParseError):
        return items
    out: list[DiscoveredModel] = []
    for entry in items:
        key = pick_str(entry, "key")
        if not key:
            continue
        instances = [i for i in pick_list(entry, "loaded_instances") or () if isinstance(i, dict)]
        sizes = [c for i in instances if (c := positive(pick_int(i, "config", "context_length")))]
        kind = pick_str(entry, "type") or ""
        caps = list(_LMS_TYPE_CAPS.get(kind, ()))
        if pick(entry, "capabilities", "vision") is True and "vision" not in caps:
            caps.append("vision")
        if pick(entry, "capabilities", "trained_for_tool_use") is True:
            caps.append("tools")
        runtime = min(sizes) if sizes else None
        out.append(
            DiscoveredModel(
                id=key,
                service=service,
                context_length=runtime,
                context_source="server" if runtime is not None else None,
                max_context_length=positive(pick_int(entry, "max_context_length")),
                loaded=bool(instances),
                size_bytes=positive(pick_int(entry, "size_bytes")),
                capabilities=tuple(caps),
                family=pick_str(entry, "architecture") or None,
                parameter_size=pick_str(entry, "params_string") or None,
                quantization=pick_str(entry, "quantization", "name") or None,
                state="loaded" if instances else "not-loaded",
                aliases=tuple(i for i in (pick_str(x, "id") for x in instances) if i and i != key),
                owned_by=pick_str(entry, "publisher") or None,
            )
        )
    return tuple(out)


# --- KoboldCpp, Open WebUI, text-generation-webui ----------------------------------------------


def parse_kobold_version(body: bytes) -> str | ParseError:
    """KoboldCpp ``GET /api/extra/version`` -> ``{"result": "KoboldCpp", "version": ...}``."""
    value = decode_top("kobold_version", body)
    if isinstance(value, ParseError):
        return value
    if pick_str(value, "result") != "KoboldCpp":
        return ParseError("kobold_version", "'result' is not 'KoboldCpp'")
    return pick_str(value, "version") or "unknown"


def parse_kobold_model(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """KoboldCpp ``GET /api/v1/model`` -> ``{"result": "koboldcpp/<name>"}``.

    ``"inactive"`` means no text model is loaded: an empty list, not an error.
    """
    value = decode_top("kobold_model", body)
    if isinstance(value, ParseError):
        return value
    name = pick_str(value, "result")
    if name is None:
        return ParseError("kobold_model", "no 'result' string")
    if not name or name == "inactive":
        return ()
    return (DiscoveredModel(id=name, service=service, loaded=True, owned_by="koboldcpp"),)


def parse_kobold_max_context(body: bytes) -> int | ParseError:
    """KoboldCpp ``GET /api/extra/true_max_context_length`` -> ``{"value": 8192}``."""
    value = decode_top("kobold_max_context", body)
    if isinstance(value, ParseError):
        return value
    found = positive(pick_int(value, "value"))
    return found if found is not None else ParseError("kobold_max_context", "no positive 'value'")


def parse_openwebui_models(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """Open WebUI ``GET /api/models`` (bearer key): ``data[]`` with ``owned_by``; models it
    proxies from Ollama keep Ollama's entry under ``ollama`` (with the weight ``digest``)."""
    items = list_at("openwebui_models", body, "data")
    if isinstance(items, ParseError):
        return items
    out: list[DiscoveredModel] = []
    for entry in items:
        model_id = pick_str(entry, "id")
        if not model_id:
            continue
        upstream = pick_dict(entry, "ollama")
        details = ollama_details(upstream)
        out.append(
            DiscoveredModel(
                id=model_id,
                service=service,
                size_bytes=positive(pick_int(upstream, "size")),
                digest=pick_str(upstream, "digest") or None,
                owned_by=pick_str(entry, "owned_by") or None,
                family=details.family,
                parameter_size=details.parameter_size,
                quantization=details.quantization,
            )
        )
    return tuple(out)


def parse_textgen_model_info(body: bytes, service: str) -> tuple[DiscoveredModel, ...] | ParseError:
    """text-generation-webui ``GET /v1/internal/model/info`` -> ``{"model_name", ...}``.

    ``"None"`` (its word for no model loaded) gives an empty list.
    """
    value = decode_top("textgen_model_info", body)
    if isinstance(value, ParseError):
        return value
    name = pick_str(value, "model_name")
    if name is None:
        return ParseError("textgen_model_info", "no 'model_name' string")
    if not name or name == "None":
        return ()
    return (DiscoveredModel(id=name, service=service, loaded=True),)
