"""Model names as servers report them, taken apart into words, size, variant and quant.

One parser serves both sides of name resolution: the catalog parses its ids, aliases and
family names with it to build its index, and ``resolve`` parses what a server reports, so
the two always agree on what a name says.

Invariants:

* ``parse_name`` never raises, whatever the text, and is a pure function of it.
* Case, separators (``-``, ``_``, spaces, and ``.`` except between two digits, where it is a
  decimal point), a model-file extension and the place of the size in the name never change
  the words, the size or the key. A ``/`` ends an organisation or a directory (only the last
  part is the name; a model file's directories are kept in ``parents``); a ``:`` starts an
  Ollama tag, whose parts count like the name's.
* Size tokens (``14b``, ``135m``, ``8x7b``), active-parameter tokens (``a3b``), quantisation
  tokens (``q4_k_m``, ``awq``, ``mlx``) and noise (``gguf``, ``latest``, dates such as
  ``2407``, context lengths such as ``128k``, dotted versions such as ``v0.3``) never appear
  among the words. The words keep their order and are split where letters meet digits
  (``qwen2.5`` becomes ``qwen``, ``2.5``), so ``Qwen2.5`` and ``qwen-2.5`` read the same.
* ``key`` is equal for two names exactly when their words and size are equal.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = [
    "SourceFormat",
    "ParsedName",
    "parse_name",
    "parse_size",
    "format_size",
]

SourceFormat = Literal["ollama", "hf", "gguf", "lmstudio", "plain"]

# Quantisation and weight-format tokens, matched on the lowercase text before it is split
# (``q4_k_m`` holds underscores, which are separators elsewhere).
_QUANT_RE: Final = re.compile(
    r"(?<![a-z0-9])("
    r"i?q[1-8](?:_(?:[0-9]+|k|xxs|xs|s|m|l|xl|nl))*"
    r"|bf16|f16|f32|fp8|fp16|fp32|mxfp4|nf4|int4|int8|awq|gptq|exl2|qat|mlx"
    r"|[2-8]bit|[2-8](?:\.[0-9]+)?bpw"
    r")(?![a-z0-9])"
)
# ``-00001-of-00003`` in split GGUF files.
_SHARD_RE: Final = re.compile(r"(?<![a-z0-9])[0-9]{5}-of-[0-9]{5}(?![a-z0-9])")
# Any run of characters other than [a-z0-9.] separates; so does a dot not between digits.
_SPLIT_RE: Final = re.compile(r"[^a-z0-9.]+|(?<![0-9])\.|\.(?![0-9])")
_SIZE_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bm])")
_MOE_SIZE_RE: Final = re.compile(r"([0-9]+)x([0-9]+(?:\.[0-9]+)?)b")
_ACTIVE_RE: Final = re.compile(r"a([0-9]+(?:\.[0-9]+)?)b")
# Context lengths (128k), dotted versions (v0.3), dates (2407, 20240910).
_NOISE_RE: Final = re.compile(r"[0-9]+k|v[0-9]+(?:\.[0-9]+)+|[0-9]{4}|[0-9]{6}|[0-9]{8}")
_NOISE_WORDS: Final = frozenset({"gguf", "ggml", "latest", "imat", "imatrix", "i1", "hf"})
_WORD_RE: Final = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)*")
_EXTENSIONS: Final = (".gguf", ".bin", ".safetensors", ".ggml", ".llamafile")
_LMSTUDIO_ORGS: Final = frozenset({"lmstudio-community", "lmstudio-ai", "mlx-community"})
# Longest text parsed: model names are short; this bounds the work on hostile input.
_MAX_LEN: Final = 512


class ParsedName(msgspec.Struct, frozen=True):
    """What a model name says, without reference to any catalog."""

    source_format: SourceFormat
    words: tuple[str, ...]  # name words in order (no size, quant or noise), lowercase
    size: str | None = None  # first size token, normalised: "14b", "135m", "8x7b"
    params_b: float | None = None  # that size in billions, when it is a plain number
    active_b: float | None = None  # active parameters of a mixture of experts ("a3b")
    quant: str | None = None  # "q4_k_m", "awq", "gptq-int4"
    # An Ollama name whose tag means Ollama's default size: "latest", or, for a library model
    # (no namespace), any tag without a size ("codellama:instruct").
    latest: bool = False
    extra_sizes: tuple[str, ...] = ()  # further size tokens, if the name has several
    parents: tuple[str, ...] = ()  # directories of a model-file path, nearest first

    @property
    def key(self) -> str:
        """Equal for two names exactly when their words and size are equal."""
        return "-".join(self.words) + "|" + (self.size or "")


def parse_size(token: str) -> tuple[str, float | None] | None:
    """``("14b", 14.0)`` for ``"14B"``, ``("8x7b", None)`` for ``"8x7b"``; None if no size."""
    low = token.strip().lower()
    m = _SIZE_RE.fullmatch(low)
    if m is not None:
        value = float(m.group(1))
        if m.group(2) == "m":
            value /= 1000.0
        return _normalise_number(m.group(1)) + m.group(2), value
    m = _MOE_SIZE_RE.fullmatch(low)
    if m is not None:
        return f"{int(m.group(1))}x{_normalise_number(m.group(2))}b", None
    return None


def format_size(params_b: float) -> str:
    """A size label for a parameter count in billions: 14.0 -> "14b", 0.135 -> "135m"."""
    if params_b < 1.0:
        return _normalise_number(f"{params_b * 1000:.1f}") + "m"
    return _normalise_number(f"{params_b:.2f}") + "b"


def _normalise_number(text: str) -> str:
    """ "07" -> "7", "1.50" -> "1.5", "3.0" -> "3", "0.5" -> "0.5"."""
    whole, _, frac = text.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def parse_name(name: str) -> ParsedName:
    """Take a model name apart. Never raises."""
    low = name.strip().lower()[:_MAX_LEN]
    fmt, core, tag, parents, namespaced = _split_source(low)
    tokens = _tokens(core) + _tokens(tag)
    words: list[str] = []
    sizes: list[tuple[str, float | None]] = []
    active: float | None = None
    quants: list[str] = []
    for is_quant, tok in tokens:
        if is_quant:
            quants.append(tok)
            continue
        size = parse_size(tok)
        if size is not None:
            sizes.append(size)
            continue
        m = _ACTIVE_RE.fullmatch(tok)
        if m is not None:
            active = float(m.group(1))
            continue
        if tok in _NOISE_WORDS or _NOISE_RE.fullmatch(tok):
            continue
        words.extend(_WORD_RE.findall(tok))
    return ParsedName(
        source_format=fmt,
        words=tuple(words),
        size=sizes[0][0] if sizes else None,
        params_b=sizes[0][1] if sizes else None,
        active_b=active,
        quant="-".join(quants) if quants else None,
        latest=fmt == "ollama" and (tag == "latest" or (not namespaced and not sizes)),
        extra_sizes=tuple(s for s, _ in sizes[1:]),
        parents=parents,
    )


def _split_source(low: str) -> tuple[SourceFormat, str, str, tuple[str, ...], bool]:
    """Return (format, name part, tag part, parent directories, namespaced) of a lowercase
    name; namespaced means the name part held a ``/``."""
    for ext in _EXTENSIONS:
        if low.endswith(ext):
            parts = [p for p in re.split(r"[\\/]", low[: -len(ext)]) if p]
            if not parts:
                return "plain", "", "", (), False
            fmt: SourceFormat = "gguf" if ext == ".gguf" else "plain"
            if any(p in _LMSTUDIO_ORGS for p in parts):
                fmt = "lmstudio"
            return fmt, parts[-1], "", tuple(reversed(parts[:-1])), True
    if "@" in low:
        # LM Studio names a quantisation variant "model@q4_k_m".
        core, _, tag = low.rpartition("@")
        return "lmstudio", _last_component(core), tag, (), "/" in core
    if ":" in low and "://" not in low:
        core, _, tag = low.rpartition(":")
        return "ollama", _last_component(core), tag, (), "/" in core or "\\" in core
    if "/" in low or "\\" in low:
        parts = [p for p in re.split(r"[\\/]", low) if p]
        if not parts:
            return "plain", "", "", (), False
        fmt = "lmstudio" if parts[0] in _LMSTUDIO_ORGS else "hf"
        return fmt, parts[-1], "", (), True
    fmt = "lmstudio" if low.endswith("-mlx") else "plain"
    return fmt, low, "", (), False


def _last_component(path: str) -> str:
    parts = [p for p in re.split(r"[\\/]", path) if p]
    return parts[-1] if parts else ""


def _tokens(text: str) -> list[tuple[bool, str]]:
    """Split lowercase text into (is_quant, token) pairs, in order."""
    out: list[tuple[bool, str]] = []
    if not text:
        return out
    text = _SHARD_RE.sub(" ", text)
    pos = 0
    for m in _QUANT_RE.finditer(text):
        out.extend((False, t) for t in _SPLIT_RE.split(text[pos : m.start()]) if t)
        out.append((True, m.group(1)))
        pos = m.end()
    out.extend((False, t) for t in _SPLIT_RE.split(text[pos:]) if t)
    return out
