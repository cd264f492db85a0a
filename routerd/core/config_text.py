"""Configuration text handling: decoding, ``${VAR}`` expansion, merging, and error paths.

This module knows nothing about the configuration schema; ``routerd.core.config`` drives it.

Invariants:

* Every problem is raised as :class:`ConfigError` carrying the source name, a JSON-path-like
  location (``$.security.allowed_hosts[2]``) and a one-line message.
* Expansion touches string *values* only, never mapping keys, and never reads the process
  environment: the environment is a mapping passed in.
* ``$${`` always yields a literal ``${``; a ``$`` not followed by ``{`` is kept as it is.
* An unset variable without a ``:-`` default is an error naming the variable and the path.
* Decoded documents are plain ``dict``/``list``/scalar trees; mapping keys are left as the
  parser produced them (YAML may produce non-string keys; the schema rejects them later).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "DocPath",
    "format_path",
    "decode_document",
    "expand_env",
    "expand_string",
    "quote_env",
    "merge_over",
]

#: A location inside a document: mapping keys and list indexes, from the root.
DocPath = tuple[object, ...]

_IDENT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ConfigError(ValueError):
    """A configuration file or string is invalid.

    ``source`` is the file name (or ``"<string>"``), ``path`` the location of the offending key
    or value (``"$.services.ollama.endpoint"``; ``None`` when the problem is the file as a whole,
    such as a syntax error or an unreadable file), ``message`` says what is wrong.
    ``str()`` gives one line: ``"FILE: $.path: message"`` (or ``"FILE: message"``).
    """

    def __init__(self, message: str, *, source: str = "<string>", path: str | None = None):
        self.source = source
        self.path = path
        self.message = message
        super().__init__(self._line())

    def _line(self) -> str:
        if self.path is None:
            return f"{self.source}: {self.message}"
        return f"{self.source}: {self.path}: {self.message}"

    def __str__(self) -> str:
        return self._line()

    def with_source(self, source: str) -> ConfigError:
        """A copy of this error attributed to ``source``."""
        return ConfigError(self.message, source=source, path=self.path)


def format_path(path: DocPath) -> str:
    """Render a document location: ``$``, ``$.a.b``, ``$.a[3]``, ``$.agents["my agent"]``."""
    out = ["$"]
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        elif isinstance(part, str) and _IDENT_KEY.match(part):
            out.append(f".{part}")
        elif isinstance(part, str):
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


# --- decoding ---------------------------------------------------------------------------------


class _StrictYamlLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first at line {seen[key]})",
                    mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or exc.context or "invalid YAML"
        return f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"YAML error: {' '.join(str(exc).split())}"


def decode_document(text: str, fmt: Literal["toml", "yaml"], source: str) -> dict[str, Any]:
    """Parse ``text`` as TOML or YAML into a plain tree whose root is a mapping.

    An empty document (or a YAML document that is only ``null``) is an empty mapping.
    Raises :class:`ConfigError` for syntax errors and for a root that is not a mapping.
    """
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TOML syntax error: {exc}", source=source) from None
    if fmt != "yaml":
        raise ConfigError(f"unknown format {fmt!r}: expected 'toml' or 'yaml'", source=source)
    try:
        tree = yaml.load(text, Loader=_StrictYamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc), source=source) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {_kind(tree)}",
            source=source,
            path="$",
        )
    return tree


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


# --- ${VAR} expansion ---------------------------------------------------------------------------


def expand_string(text: str, env: Mapping[str, str], *, source: str, path: DocPath) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``text``; ``$${`` gives a literal ``${``.

    ``${VAR:-default}`` uses ``default`` when ``VAR`` is unset *or empty*, as the shell does.
    The default is literal text (no nesting) and ends at the first ``}``.
    Raises :class:`ConfigError` (with ``path``) for an unset variable without a default, an
    unterminated ``${`` or an invalid variable name.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise ConfigError(
                    f"unterminated '${{' in {text!r} (write '$${{' for a literal '${{')",
                    source=source,
                    path=format_path(path),
                )
            out.append(_substitute(text[j + 2 : end], env, source=source, path=path))
            i = end + 1
        else:
            out.append("$")
            i = j + 1
    return "".join(out)


def _substitute(body: str, env: Mapping[str, str], *, source: str, path: DocPath) -> str:
    name, sep, default = body.partition(":-")
    if not _VAR_NAME.match(name):
        raise ConfigError(
            f"invalid variable reference '${{{body}}}': a name is letters, digits and '_', "
            "not starting with a digit (write '$${' for a literal '${')",
            source=source,
            path=format_path(path),
        )
    value = env.get(name)
    if sep:
        return value if value else default
    if value is None:
        raise ConfigError(
            f"environment variable {name} is not set "
            f"(set it, or give a default: '${{{name}:-DEFAULT}}')",
            source=source,
            path=format_path(path),
        )
    return value


def quote_env(text: str) -> str:
    """Escape ``text`` so that :func:`expand_string` returns it unchanged."""
    return text.replace("${", "$${")


def expand_env(tree: Any, env: Mapping[str, str], *, source: str, path: DocPath = ()) -> Any:
    """Return a copy of ``tree`` with every string value expanded (keys are left alone)."""
    if isinstance(tree, str):
        return expand_string(tree, env, source=source, path=path)
    if isinstance(tree, dict):
        return {k: expand_env(v, env, source=source, path=(*path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand_env(v, env, source=source, path=(*path, i)) for i, v in enumerate(tree)]
    return tree


# --- layering over defaults ---------------------------------------------------------------------


def merge_over(defaults: Any, user: Any) -> Any:
    """Lay the user's tree over the defaults' tree.

    Mappings merge key by key (recursively); anything else in ``user`` replaces the default,
    lists included. A user ``null`` where the default is a mapping (a whole section) keeps the
    default section; elsewhere ``null`` is kept, so the schema decides whether it is allowed.
    """
    if isinstance(defaults, dict) and isinstance(user, dict):
        merged = dict(defaults)
        for key, value in user.items():
            merged[key] = merge_over(defaults[key], value) if key in defaults else value
        return merged
    if user is None and isinstance(defaults, dict):
        return defaults
    return user
