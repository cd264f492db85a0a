"""Token estimates per model family, calibrated by what the servers report.

Counting is an estimate: characters per token by model family (the seed's table), refined by a
per-model :class:`Calibration` learned from the prompt token counts servers return, and replaced
by exact counts where a server can tokenize (see :func:`tokenize_request`).

Invariants:

* Counting is pure, deterministic, linear in the text length and never raises on any ``str``
  (lone surrogates included).
* The empty text costs 0 tokens; any other text costs at least 1.
* Text is measured in UTF-8 bytes, not code points: the tokenizers of every family here work on
  bytes, so a CJK character (3 bytes) or an emoji (4) costs what it costs them, not a quarter
  token. For ASCII, bytes and characters agree, so the seed's ratios keep their meaning.
* Lines that look like code are counted at ``CODE_DENSITY`` times the family's ratio (more
  tokens per byte): punctuation, operators, short identifiers and indentation split into more
  tokens than English words do. The factor is a deliberate, modest prior; calibration corrects
  whatever it gets wrong for a given model.
* Calibration scales the content estimate only; the chat-template overhead per message
  (``ROLE_OVERHEAD``) is a fixed count that calibration never touches.
* Calibration scales prose and code separately (a tokenizer's ratio for English rarely holds
  for code): each observation's actual count is fitted to ``scale x prose + code_scale x code``
  by an exponentially weighted least squares over the observations' shares, with the code
  scale tied (weakly) to the prose scale where the observations say little about code.
* A :class:`Calibration`'s two scales always lie in ``[SCALE_MIN, SCALE_MAX]``; an observation
  outside that ratio range, or too small to say anything, leaves them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal, Protocol

import msgspec

__all__ = [
    "FAMILY_CHARS_PER_TOKEN",
    "CODE_DENSITY",
    "ROLE_OVERHEAD",
    "REPLY_PRIMING",
    "SCALE_MIN",
    "SCALE_MAX",
    "MessageLike",
    "Calibration",
    "TokenizeDialect",
    "TokenizeCall",
    "resolve_family",
    "chars_per_token",
    "estimate_parts",
    "estimate_text",
    "count_text",
    "message_overhead",
    "count_message",
    "count_messages",
    "observe_prompt",
    "observe_text",
    "encode_calibrations",
    "decode_calibrations",
    "tokenize_request",
    "parse_tokenize_response",
]

#: Characters (UTF-8 bytes) per token of prose, by model family. The seed's values.
FAMILY_CHARS_PER_TOKEN: Final[Mapping[str, float]] = MappingProxyType(
    {
        "qwen": 3.5,
        "deepseek": 4.0,
        "llama": 3.8,
        "mistral": 4.0,
        "mixtral": 4.0,
        "default": 4.0,
    }
)

#: Code is counted at this fraction of the prose ratio (0.8: a quarter more tokens per byte).
CODE_DENSITY: Final[float] = 0.8

#: Chat-template tokens around one message, by role: the start marker, the role name, the
#: separators and the end marker (ChatML ``<|im_start|>user\n…<|im_end|>\n`` is 5; Llama 3's
#: header/eot framing is 5; Mistral's ``[INST]…[/INST]`` about 4). Tool results carry extra
#: wrapping in most templates (``<tool_response>`` tags, ``[TOOL_RESULTS]``).
ROLE_OVERHEAD: Final[Mapping[str, int]] = MappingProxyType(
    {"system": 5, "user": 5, "assistant": 5, "tool": 8}
)
_DEFAULT_OVERHEAD: Final = 5

#: Tokens that open the answer (``<|im_start|>assistant\n``, a BOS token), once per prompt.
REPLY_PRIMING: Final[int] = 3

#: Bounds of a calibration scale (actual tokens / estimated tokens). A model whose tokenizer is
#: off by more than 4x from its family's estimate is misconfigured, not calibrated.
SCALE_MIN: Final[float] = 0.25
SCALE_MAX: Final[float] = 4.0

#: Observations whose content estimate is below this many tokens are dominated by template
#: overhead and rounding; they are ignored.
MIN_OBSERVED_TOKENS: Final[float] = 32.0

#: Weight of a new observation once warmed up (exponential moving average).
CALIBRATION_ALPHA: Final[float] = 0.1

#: After this many accepted observations, an observation more than ``OUTLIER_FACTOR`` away from
#: the current scale is rejected as an outlier (a partly cached or truncated prompt count).
CALIBRATION_WARMUP: Final[int] = 3
OUTLIER_FACTOR: Final[float] = 2.0

#: Weight of the permanent tie between the code scale and the prose scale in every fit (a
#: ridge term, against the about 10 observations' worth of weight the fit holds): where
#: prompts carry a few lines of code, that code says little, and its scale stays near prose's.
#: Measured on llama-server (bench/tokens.py): 0 lets the code scale run off, 0.1 keeps it
#: from learning what it can.
CODE_TIE: Final[float] = 0.02

# Deleting the code symbols and comparing lengths counts them in one C-level pass per line.
_DROP_CODE_SYMBOLS: Final = str.maketrans("", "", "{}[]();=<>|&\\$")
_FENCES: Final = ("```", "~~~")


class MessageLike(Protocol):
    """What counting needs from a chat message (``routerd.core.context.Message`` is one)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def name(self) -> str | None: ...

    @property
    def tool_call_id(self) -> str | None: ...


# --- Estimation ----------------------------------------------------------------------------


def resolve_family(family: str) -> str:
    """The key of ``FAMILY_CHARS_PER_TOKEN`` for ``family``.

    Case-insensitive; an unknown family takes the longest known family it starts with
    (``qwen2.5-coder`` and Ollama's ``qwen2`` resolve to ``qwen``), else ``default``.
    """
    key = family.strip().lower()
    if key in FAMILY_CHARS_PER_TOKEN:
        return key
    best = ""
    for known in FAMILY_CHARS_PER_TOKEN:
        if known != "default" and key.startswith(known) and len(known) > len(best):
            best = known
    return best or "default"


def chars_per_token(family: str) -> float:
    """Bytes of prose per token for ``family`` (see :func:`resolve_family`)."""
    return FAMILY_CHARS_PER_TOKEN[resolve_family(family)]


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _looks_like_code(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    if line.startswith(("    ", "\t")):
        return True
    symbols = len(stripped) - len(stripped.translate(_DROP_CODE_SYMBOLS))
    # One operator or bracket in ten characters: ordinary prose stays well below that.
    return symbols * 10 >= len(stripped)


def _code_and_prose_bytes(text: str) -> tuple[int, int]:
    """Split ``text``'s UTF-8 length into (code bytes, prose bytes)."""
    total = _utf8_len(text)
    code = 0
    in_fence = False
    for line in text.split("\n"):
        fence = line.lstrip().startswith(_FENCES)
        if fence:
            in_fence = not in_fence
        if fence or in_fence or _looks_like_code(line):
            code += _utf8_len(line) + 1
    code = min(code, total)
    return code, total - code


def estimate_parts(text: str, family: str) -> tuple[float, float]:
    """Uncalibrated token estimates of ``text``'s prose and of its code, for ``family``."""
    if not text:
        return 0.0, 0.0
    ratio = chars_per_token(family)
    code, prose = _code_and_prose_bytes(text)
    return prose / ratio, code / (ratio * CODE_DENSITY)


def estimate_text(text: str, family: str) -> float:
    """Uncalibrated token estimate of ``text`` for ``family`` (a float; 0.0 for ``""``)."""
    prose, code = estimate_parts(text, family)
    return prose + code


def count_text(text: str, family: str, calib: Calibration | None = None) -> int:
    """Tokens of ``text`` for ``family``, its prose and code scaled by ``calib`` when given.

    Rounds up: 0 for the empty text, at least 1 otherwise.
    """
    if not text:
        return 0
    prose, code = estimate_parts(text, family)
    raw = prose + code if calib is None else prose * calib.scale + code * calib.code
    return max(1, math.ceil(raw))


def message_overhead(role: str, name: str | None = None, tool_call_id: str | None = None) -> int:
    """Template tokens around one message: the role's framing plus its name and tool call id."""
    overhead = ROLE_OVERHEAD.get(role, _DEFAULT_OVERHEAD)
    for extra in (name, tool_call_id):
        if extra:
            overhead += count_text(extra, "default") + 1
    return overhead


def count_message(msg: MessageLike, family: str, calib: Calibration | None = None) -> int:
    """Tokens one message costs in a prompt: its content plus :func:`message_overhead`."""
    return count_text(msg.content, family, calib) + message_overhead(
        msg.role, msg.name, msg.tool_call_id
    )


def count_messages(
    msgs: Iterable[MessageLike], family: str, calib: Calibration | None = None
) -> int:
    """Tokens of a whole prompt: every message plus ``REPLY_PRIMING`` (0 when empty)."""
    total = 0
    seen = False
    for msg in msgs:
        seen = True
        total += count_message(msg, family, calib)
    return total + REPLY_PRIMING if seen else 0


# --- Calibration ---------------------------------------------------------------------------


_Scale = Annotated[float, msgspec.Meta(ge=SCALE_MIN, le=SCALE_MAX)]
# Bounds of the fit's sums: at most about 1/CALIBRATION_ALPHA observations' worth of weight,
# each with shares <= 1 and a ratio <= SCALE_MAX; anything far beyond was not written by us.
_Sum = Annotated[float, msgspec.Meta(ge=0.0, le=1e4)]
_Cross = Annotated[float, msgspec.Meta(ge=-1e4, le=1e4)]
#: The fit's state: weighted sums of prose share², prose x code share, code share², prose
#: share x ratio, code share x ratio.
Sums = tuple[_Sum, _Cross, _Sum, _Sum, _Sum]


def _clamp(scale: float) -> float:
    return min(SCALE_MAX, max(SCALE_MIN, scale))


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """Learned correction for one model: actual tokens = ``scale`` x estimated prose tokens +
    ``code_scale`` x estimated code tokens.

    Immutable; :meth:`observe` returns a new value. Serialise it with msgspec (JSON or msgpack);
    decoding validates the bounds, so a tampered file fails to decode instead of skewing counts.
    ``samples`` counts accepted observations, ``rejected`` the ignored ones. ``code_scale``
    None (a calibration written before code had a scale of its own) means ``scale``; ``sums``
    is the fit's state (None: derived from ``scale`` and ``samples`` at the next observation).
    """

    scale: _Scale = 1.0
    samples: Annotated[int, msgspec.Meta(ge=0)] = 0
    rejected: Annotated[int, msgspec.Meta(ge=0)] = 0
    code_scale: _Scale | None = None
    sums: Sums | None = None

    def __post_init__(self) -> None:
        if self.sums is not None:
            pp, pc, cc, _, _ = self.sums
            # Sums of squares of real observations satisfy Cauchy-Schwarz; the fit needs it.
            if pp * cc < pc * pc * (1 - 1e-9) or pp + cc <= 0:
                raise ValueError("calibration sums are inconsistent")

    @property
    def code(self) -> float:
        """The scale applied to code."""
        return self.scale if self.code_scale is None else self.code_scale

    @property
    def largest(self) -> float:
        """The larger of the two scales (a calibrated count is at most this x the estimate)."""
        return max(self.scale, self.code)

    def observe(self, estimated: float, actual: int, *, code: float = 0.0) -> Calibration:
        """Fold in one observation: ``estimated`` uncalibrated content tokens (from
        :func:`estimate_text`, never a calibrated count), ``code`` of them code (from
        :func:`estimate_parts`; 0: all prose), against ``actual`` tokens the server reported
        for the same content.

        Ignored (only ``rejected`` grows): an estimate below ``MIN_OBSERVED_TOKENS``, a
        non-finite value, a ``code`` part outside ``[0, estimated]``, a non-positive count, a
        ratio outside ``[SCALE_MIN, SCALE_MAX]``, and after warm-up a ratio more than
        ``OUTLIER_FACTOR`` away from what the scales predict. The scales are the least-squares
        fit of the ratios to the prose and code shares, each observation weighing ``1/(n+2)``
        at first (the prior counts as one) and ``CALIBRATION_ALPHA`` later.
        """
        if not (math.isfinite(estimated) and estimated >= MIN_OBSERVED_TOKENS) or actual <= 0:
            return self._reject()
        if not (math.isfinite(code) and 0.0 <= code <= estimated):
            return self._reject()
        ratio = actual / estimated
        if not SCALE_MIN <= ratio <= SCALE_MAX:
            return self._reject()
        xc = code / estimated
        xp = 1.0 - xc
        predicted = self.scale * xp + self.code * xc
        if self.samples >= CALIBRATION_WARMUP and not (
            predicted / OUTLIER_FACTOR <= ratio <= predicted * OUTLIER_FACTOR
        ):
            return self._reject()
        # Older observations fade once the fit holds 1/alpha of them (the prior counts as one).
        keep = 1.0 if self.samples + 2 <= 1.0 / CALIBRATION_ALPHA else 1.0 - CALIBRATION_ALPHA
        pp, pc, cc, py, cy = self._sums()
        sums: Sums = (
            pp * keep + xp * xp,
            pc * keep + xp * xc,
            cc * keep + xc * xc,
            py * keep + xp * ratio,
            cy * keep + xc * ratio,
        )
        fit = _solve(sums)
        if fit is None:  # pragma: no cover - the sums always hold a positive prior
            return self._reject()
        return Calibration(
            scale=fit[0],
            code_scale=fit[1],
            samples=self.samples + 1,
            rejected=self.rejected,
            sums=sums,
        )

    def _sums(self) -> Sums:
        if self.sums is not None:
            return self.sums
        weight = min(self.samples + 1.0, 1.0 / CALIBRATION_ALPHA)
        if self.code_scale is None:
            # The code scale follows the prose scale: a tie of weight one.
            return (weight + 1.0, -1.0, 1.0, weight * self.scale, 0.0)
        return (weight, 0.0, 1.0, weight * self.scale, self.code_scale)

    def _reject(self) -> Calibration:
        return msgspec.structs.replace(self, rejected=self.rejected + 1)


def _solve(sums: Sums) -> tuple[float, float] | None:
    """The scales minimising the weighted squared error, with ``CODE_TIE``; None if singular."""
    pp, pc, cc, py, cy = sums
    a, b, d = pp + CODE_TIE, pc - CODE_TIE, cc + CODE_TIE
    det = a * d - b * b
    if not (math.isfinite(det) and det > 1e-12):
        return None
    return _clamp((d * py - b * cy) / det), _clamp((a * cy - b * py) / det)


def observe_prompt(
    calib: Calibration,
    msgs: Iterable[MessageLike],
    family: str,
    prompt_tokens: int,
    *,
    window: int | None = None,
) -> Calibration:
    """Calibrate from one answered request: ``msgs`` exactly as sent and the server's prompt
    token count (Ollama ``prompt_eval_count``, OpenAI ``usage.prompt_tokens``).

    The template overhead is subtracted before comparing. When ``window`` is given, a count at
    or above it is ignored: servers that silently truncate (Ollama over ``num_ctx``) report the
    truncated length. Tool schemas sent with the request inflate the count; leave such requests
    out, or accept a scale that errs high.
    """
    prose = code = 0.0
    overhead = REPLY_PRIMING
    for msg in msgs:
        p, c = estimate_parts(msg.content, family)
        prose += p
        code += c
        overhead += message_overhead(msg.role, msg.name, msg.tool_call_id)
    if window is not None and prompt_tokens >= window:
        return calib._reject()
    return calib.observe(prose + code, prompt_tokens - overhead, code=code)


def observe_text(calib: Calibration, text: str, family: str, tokens: int) -> Calibration:
    """Calibrate from an exact count of ``text`` (a ``/tokenize`` answer, no special tokens)."""
    prose, code = estimate_parts(text, family)
    return calib.observe(prose + code, tokens, code=code)


_calibrations_decoder = msgspec.json.Decoder(dict[str, Calibration])
_json_encoder = msgspec.json.Encoder()


def encode_calibrations(table: Mapping[str, Calibration]) -> bytes:
    """JSON for a table of calibrations keyed by model id (what the shell persists)."""
    return _json_encoder.encode(dict(table))


def decode_calibrations(data: bytes) -> dict[str, Calibration]:
    """Inverse of :func:`encode_calibrations`. Raises ``msgspec.DecodeError`` (or its subclass
    ``msgspec.ValidationError``) on malformed or out-of-range data."""
    return _calibrations_decoder.decode(data)


# --- Exact counts from servers that tokenize -----------------------------------------------

#: ``llama.cpp``: llama-server's ``POST /tokenize`` ``{"content"}`` -> ``{"tokens": [...]}``.
#: ``llama-cpp-python``: ``POST /extras/tokenize/count`` ``{"input"}`` -> ``{"count": n}`` (its
#: count includes a BOS token, one more than the content alone).
TokenizeDialect = Literal["llama.cpp", "llama-cpp-python"]


class TokenizeCall(msgspec.Struct, frozen=True):
    """An HTTP request for the shell to send: ``POST path`` with JSON ``body``."""

    path: str
    body: bytes


class _TokenizeBody(msgspec.Struct):
    content: str
    add_special: bool = False


class _CountBody(msgspec.Struct):
    input: str


class _Piece(msgspec.Struct):
    id: int


class _TokensReply(msgspec.Struct):
    tokens: list[int | _Piece]


class _CountReply(msgspec.Struct):
    count: Annotated[int, msgspec.Meta(ge=0)]


_tokens_decoder = msgspec.json.Decoder(_TokensReply)
_count_decoder = msgspec.json.Decoder(_CountReply)


def _sendable(text: str) -> str:
    # Lone surrogates cannot travel as UTF-8 JSON; the shell could not send them either.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def tokenize_request(text: str, dialect: TokenizeDialect = "llama.cpp") -> TokenizeCall:
    """The request that asks a server to tokenize ``text`` without special tokens (a lone
    surrogate, which no UTF-8 body can carry, is sent as ``?``)."""
    text = _sendable(text)
    if dialect == "llama.cpp":
        return TokenizeCall("/tokenize", _json_encoder.encode(_TokenizeBody(content=text)))
    return TokenizeCall("/extras/tokenize/count", _json_encoder.encode(_CountBody(input=text)))


def parse_tokenize_response(body: bytes, dialect: TokenizeDialect = "llama.cpp") -> int | None:
    """The token count in a tokenize answer, or ``None`` when the body is not one.

    For ``llama.cpp`` both ``{"tokens": [1, 2]}`` and the ``with_pieces`` form
    ``{"tokens": [{"id": 1, "piece": "a"}]}`` are understood.
    """
    try:
        if dialect == "llama.cpp":
            return len(_tokens_decoder.decode(body).tokens)
        return _count_decoder.decode(body).count
    except msgspec.DecodeError:
        return None
