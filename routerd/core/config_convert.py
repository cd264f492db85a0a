"""Typed conversion of a decoded configuration tree, with exact error paths.

``msgspec`` reports where a value failed, but writes every mapping key as ``[...]`` and an
unknown key as the location of the mapping that holds it. This module turns its report into the
exact path of the offending key or value, with a "did you mean" hint for a misspelt key.

Invariants:

* :func:`convert_tree` either returns an instance of the requested type or raises
  :class:`~routerd.core.config_text.ConfigError`; it never lets a msgspec error escape.
* Paths are rendered by :func:`~routerd.core.config_text.format_path`, the same renderer the
  ``${VAR}`` expansion uses, so one location always reads the same way.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from routerd.core.config_text import ConfigError, DocPath, format_path

__all__ = ["convert_tree"]

T = TypeVar("T")

_AT_KEY = re.compile(r"(?P<msg>.*) - at `key` in `(?P<path>\$[^`]*)`\Z", re.S)
_AT = re.compile(r"(?P<msg>.*) - at `(?P<path>\$[^`]*)`\Z", re.S)
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>.*)`\Z", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>.*)`\Z", re.S)
_WORDS = {"object": "mapping", "array": "list"}
_ANY_KEY = object()  # msgspec's "[...]": some key of a mapping


def convert_tree(tree: Any, type_: type[T], *, source: str) -> T:
    """Convert a decoded tree to ``type_`` (strictly: no string-to-number coercion).

    Raises :class:`ConfigError` with the exact path of the first bad key or value.
    """
    try:
        return msgspec.convert(tree, type_)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), tree, type_, source) from None


def _translate(text: str, tree: Any, type_: type[Any], source: str) -> ConfigError:
    at_key = _AT_KEY.match(text)
    at = None if at_key else _AT.match(text)
    if at_key:
        msg, tokens = at_key["msg"], _tokens(at_key["path"])
    elif at:
        msg, tokens = at["msg"], _tokens(at["path"])
    else:
        msg, tokens = text, []
    path = _locate(tree, tokens, type_, text)

    if at_key:
        node = _get(tree, path)
        bad = [k for k in node if not isinstance(k, str)] if isinstance(node, dict) else []
        shown = f" {bad[0]!r} ({type(bad[0]).__name__})" if bad else ""
        return ConfigError(
            f"invalid key{shown}: keys must be strings", source=source, path=format_path(path)
        )
    if m := _UNKNOWN.match(msg):
        name = m["name"]
        allowed = _allowed_keys(type_, path)
        hint = ""
        if allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            hint += f"; allowed keys: {', '.join(allowed)}"
        return ConfigError(
            f"unknown key {name!r}{hint}", source=source, path=format_path((*path, name))
        )
    if m := _MISSING.match(msg):
        return ConfigError(
            "required key is missing", source=source, path=format_path((*path, m["name"]))
        )
    return ConfigError(_clean(msg), source=source, path=format_path(path))


def _clean(msg: str) -> str:
    msg = re.sub(r"`([^`]*)`", lambda m: _WORDS.get(m[1], m[1]), msg)
    return msg[:1].lower() + msg[1:]


def _tokens(path: str) -> list[object]:
    out: list[object] = []
    for name, index in _TOKEN.findall(path):
        if name:
            out.append(name)
        elif index == "...":
            out.append(_ANY_KEY)
        else:
            out.append(int(index))
    return out


def _get(tree: Any, path: DocPath) -> Any:
    node = tree
    for part in path:
        node = node[part]
    return node


def _replace(tree: Any, path: DocPath, new: Any) -> Any:
    """A copy of ``tree`` with the node at ``path`` replaced (copies only along the path)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        copy_d = dict(tree)
        copy_d[head] = _replace(tree[head], rest, new)
        return copy_d
    copy_l = list(tree)
    assert isinstance(head, int)
    copy_l[head] = _replace(tree[head], rest, new)
    return copy_l


def _locate(tree: Any, tokens: list[object], type_: type[Any], original: str) -> DocPath:
    """Replace each ``[...]`` in ``tokens`` with the actual mapping key that fails.

    For each such mapping, keep only one entry at a time and convert again: the first entry
    that reproduces the original error is the culprit (msgspec reports the first error in
    document order, so this finds the same one).
    """
    path: list[object] = []
    trial = tree
    for token in tokens:
        if token is not _ANY_KEY:
            path.append(token)
            continue
        try:
            node = _get(trial, tuple(path))
        except (KeyError, IndexError, TypeError):
            break
        if not isinstance(node, dict):
            break
        found = False
        for key, value in node.items():
            reduced = _replace(trial, tuple(path), {key: value})
            try:
                msgspec.convert(reduced, type_)
            except msgspec.ValidationError as exc:
                if str(exc) == original:
                    trial = reduced
                    path.append(key)
                    found = True
                    break
        if not found:
            break
    return tuple(path)


def _allowed_keys(type_: type[Any], path: DocPath) -> list[str]:
    """The keys the schema accepts for the mapping at ``path`` (empty if not a Struct)."""
    info: mi.Type = mi.type_info(type_)
    for part in path:
        info = _unwrap(info)
        if isinstance(info, mi.StructType) and isinstance(part, str):
            fields = {f.encode_name: f.type for f in info.fields}
            if part not in fields:
                return []
            info = fields[part]
        elif isinstance(info, (mi.ListType, mi.SetType, mi.VarTupleType)):
            info = info.item_type
        elif isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return []
    info = _unwrap(info)
    if isinstance(info, mi.StructType):
        return [f.encode_name for f in info.fields]
    return []


def _unwrap(info: mi.Type) -> mi.Type:
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(structs) == 1:
            return structs[0]
        # ``str | Table``: a mapping in the document can only be the table.
        tables = [t for t in structs if isinstance(t, mi.StructType)]
        if len(tables) == 1:
            return tables[0]
    return info
