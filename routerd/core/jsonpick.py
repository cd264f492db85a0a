"""Defensive reading of JSON bodies from servers we do not control.

Invariants:

* Nothing here raises on any input: bad bytes, deep nesting, wrong types and absent keys all
  come back as ``None`` (or the caller's fallback), never as an exception.
* Values come back only with the type asked for: ``pick_int`` never returns a bool or a float,
  ``pick_str`` never returns a number. Servers write ``"size": ""`` where a number belongs
  (llama.cpp's Ollama-style list does), so every field is checked, none is trusted.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["INVALID", "decode_json", "pick", "pick_int", "pick_str", "pick_list", "pick_dict"]


class _Invalid:
    """Marker for a body that is not JSON (distinct from a JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

_decoder: Final = msgspec.json.Decoder()


def decode_json(body: bytes) -> Any:
    """Decode ``body`` as JSON, or return ``INVALID``. Never raises."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError, TypeError):
        return INVALID


def pick(value: Any, *keys: str | int) -> Any:
    """Follow ``keys`` through nested dicts (str keys) and lists (int keys); ``None`` if lost."""
    for key in keys:
        if isinstance(key, str) and isinstance(value, dict):
            value = value.get(key)
        elif isinstance(key, int) and isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def pick_int(value: Any, *keys: str | int) -> int | None:
    """An integer (not a bool) at ``keys``; integral floats such as ``8192.0`` count."""
    found = pick(value, *keys)
    if isinstance(found, bool):
        return None
    if isinstance(found, int):
        return found
    if isinstance(found, float) and found.is_integer() and abs(found) < 2**63:
        return int(found)
    return None


def pick_str(value: Any, *keys: str | int) -> str | None:
    """A string at ``keys``, or ``None``."""
    found = pick(value, *keys)
    return found if isinstance(found, str) else None


def pick_list(value: Any, *keys: str | int) -> list[Any] | None:
    """A list at ``keys``, or ``None``."""
    found = pick(value, *keys)
    return found if isinstance(found, list) else None


def pick_dict(value: Any, *keys: str | int) -> dict[str, Any] | None:
    """A dict at ``keys``, or ``None``."""
    found = pick(value, *keys)
    return found if isinstance(found, dict) else None
