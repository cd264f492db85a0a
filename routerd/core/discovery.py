"""From a kind's probe answers to one report: its models, slots, version and identity.

Invariants:

* ``assemble`` reads only the answers it is given and never raises; a body it cannot read
  becomes a ``ParseError`` in ``report.errors`` and the rest of the report still stands.
* Context lengths: the server's own figures first (``context_source="server"``); the name
  (``"name"``) and a configured default (``"default"``) only through ``resolve_context``,
  and only when the server said nothing.
* Grouping (``group_backends``) merges two services only on evidence: the same canonical
  URL, the same process identity (llama.cpp's per-process ``media_marker``; Ollama's version
  and weight digests), or a front (Open WebUI) whose proxied weights all live on one
  backend. Without evidence nothing is merged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, TypeVar

import msgspec

from routerd.core.health import HealthInput
from routerd.core.identify import Identification, ProbeResponse
from routerd.core.model_parsers import (
    DiscoveredModel,
    ParseError,
    parse_llamacpp_props,
    parse_llamacpp_slots,
    parse_ollama_ps,
    parse_ollama_show,
    parse_ollama_tags,
    parse_ollama_version,
    parse_openai_models,
)
from routerd.core.services import ServiceKind, spec_for
from routerd.core.vendor_parsers import (
    parse_kobold_max_context,
    parse_kobold_model,
    parse_kobold_version,
    parse_lmstudio_v0,
    parse_lmstudio_v1,
    parse_openwebui_models,
    parse_textgen_model_info,
)

__all__ = [
    "ServiceReport",
    "PerModelRequest",
    "ModelDiff",
    "show_key",
    "per_model_requests",
    "assemble",
    "probe_input",
    "resolve_context",
    "infer_context_from_name",
    "diff_models",
]

_Models = tuple[DiscoveredModel, ...]
_T = TypeVar("_T")


class ServiceReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one discovery (or probe cycle) learned about a service.

    ``identity`` is a string equal for two addresses of the same server process, when the
    server makes that knowable (see ``fingerprint``).
    """

    kind: ServiceKind
    models: _Models = ()
    version: str | None = None
    total_slots: int | None = None
    busy_slots: int | None = None
    identity: str | None = None
    errors: tuple[ParseError, ...] = ()

    @property
    def all_slots_busy(self) -> bool:
        return bool(self.total_slots) and (self.busy_slots or 0) >= (self.total_slots or 0)


class PerModelRequest(msgspec.Struct, frozen=True):
    """A request the shell sends once per model (Ollama's ``POST /api/show``); the answer is
    handed back to ``assemble`` under ``key``."""

    key: str
    method: str
    path: str
    body: bytes


class ModelDiff(msgspec.Struct, frozen=True):
    """Model ids added and removed, and ids whose details changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def show_key(model_id: str) -> str:
    """The key under which the shell stores the ``/api/show`` answer for ``model_id``."""
    return f"/api/show#{model_id}"


_json_encoder: Final = msgspec.json.Encoder()


def per_model_requests(
    kind: ServiceKind, models: Iterable[DiscoveredModel]
) -> tuple[PerModelRequest, ...]:
    """The per-model requests of ``kind``'s plan, one per model (none for most kinds)."""
    steps = [s for s in spec_for(kind).plan if s.per_model]
    return tuple(
        PerModelRequest(show_key(m.id), s.method, s.path, _json_encoder.encode({"model": m.id}))
        for s in steps
        for m in models
    )


# --- Assembling a report -----------------------------------------------------------------------


def _ok(responses: Mapping[str, ProbeResponse], path: str) -> bytes | None:
    resp = responses.get(path)
    return resp.body if resp is not None and 200 <= resp.status < 300 else None


def _overlay(base: _Models, extra: _Models, *, mark_missing_unloaded: bool = False) -> _Models:
    """``base`` with each same-id entry of ``extra`` laid over it (its set fields win);
    ``extra`` entries unknown to ``base`` are appended."""
    by_id = {m.id: m for m in extra}
    out: list[DiscoveredModel] = []
    for model in base:
        top = by_id.pop(model.id, None)
        if top is None:
            out.append(
                msgspec.structs.replace(model, loaded=False) if mark_missing_unloaded else model
            )
            continue
        changes = {
            f: getattr(top, f)
            for f in top.__struct_fields__
            if f not in ("id", "service") and getattr(top, f) not in (None, ())
        }
        out.append(msgspec.structs.replace(model, **changes))
    out.extend(by_id.values())
    return tuple(out)


class _Builder:
    def __init__(self, kind: ServiceKind, service: str, responses: Mapping[str, ProbeResponse]):
        self.kind = kind
        self.service = service
        self.responses = responses
        self.errors: list[ParseError] = []

    def body(self, path: str) -> bytes | None:
        return _ok(self.responses, path)

    def models(
        self, path: str, parser: Callable[[bytes, str], _Models | ParseError]
    ) -> _Models | None:
        body = self.body(path)
        if body is None:
            return None
        parsed = parser(body, self.service)
        if isinstance(parsed, ParseError):
            self.errors.append(parsed)
            return None
        return parsed

    def value(self, path: str, parser: Callable[[bytes], _T | ParseError]) -> _T | None:
        body = self.body(path)
        if body is None:
            return None
        parsed = parser(body)
        if isinstance(parsed, ParseError):
            self.errors.append(parsed)
            return None
        return parsed


def _ollama(b: _Builder) -> ServiceReport:
    models = b.models("/api/tags", parse_ollama_tags) or ()
    running = b.models("/api/ps", parse_ollama_ps)
    if running is not None:
        models = _overlay(models, running, mark_missing_unloaded=True)
    shown: list[DiscoveredModel] = []
    for model in models:
        show = b.value(show_key(model.id), parse_ollama_show)
        if show is None:
            shown.append(model)
            continue
        extra = DiscoveredModel(
            id=model.id,
            service=b.service,
            max_context_length=show.context_length,
            capabilities=show.capabilities,
            family=show.family,
            parameter_size=show.parameter_size,
            quantization=show.quantization,
        )
        shown.append(_overlay((model,), (extra,))[0])
    version = b.value("/api/version", parse_ollama_version)
    return ServiceReport(
        b.kind, tuple(shown), version=version, identity=_ollama_identity(version, shown)
    )


def _ollama_identity(version: str | None, models: Sequence[DiscoveredModel]) -> str | None:
    digests = sorted(f"{m.id}={m.digest}" for m in models if m.digest)
    if not digests:
        return None
    blob = "\n".join([version or "?", *digests]).encode()
    return "ollama:" + hashlib.sha256(blob).hexdigest()[:32]


def _llamacpp(b: _Builder) -> ServiceReport:
    models = b.models("/v1/models", parse_openai_models) or ()
    p = b.value("/props", parse_llamacpp_props)
    s = b.value("/slots", parse_llamacpp_slots)
    runtime = (s.n_ctx if s else None) or (p.n_ctx if p else None)
    if runtime is not None:
        models = tuple(
            m
            if m.context_length is not None
            else msgspec.structs.replace(
                m,
                context_length=runtime,
                context_source="server",
                max_context_length=m.max_context_length or runtime,
            )
            for m in models
        )
    if p is not None and p.vision:
        models = tuple(
            msgspec.structs.replace(m, capabilities=(*m.capabilities, "vision"))
            if "vision" not in m.capabilities
            else m
            for m in models
        )
    identity = None
    if p is not None:
        if p.media_marker:
            identity = f"llamacpp:{p.media_marker}"
        elif p.build_info and p.model_path:
            identity = f"llamacpp:{p.build_info}:{p.model_path}:{p.n_ctx}:{p.total_slots}"
    return ServiceReport(
        b.kind,
        models,
        version=p.build_info if p else None,
        total_slots=(s.total if s else None) or (p.total_slots if p else None),
        busy_slots=s.processing if s else None,
        identity=identity,
    )


def _lmstudio(b: _Builder) -> ServiceReport:
    for path, parser in (
        ("/api/v1/models", parse_lmstudio_v1),
        ("/api/v0/models", parse_lmstudio_v0),
        ("/v1/models", parse_openai_models),
    ):
        models = b.models(path, parser)
        if models is not None:
            return ServiceReport(b.kind, models)
    return ServiceReport(b.kind)


def _koboldcpp(b: _Builder) -> ServiceReport:
    models = b.models("/api/v1/model", parse_kobold_model) or ()
    ctx = b.value("/api/extra/true_max_context_length", parse_kobold_max_context)
    if ctx is not None:
        models = tuple(
            msgspec.structs.replace(
                m, context_length=ctx, context_source="server", max_context_length=ctx
            )
            for m in models
        )
    version = b.value("/api/extra/version", parse_kobold_version)
    return ServiceReport(b.kind, models, version=version)


def assemble(
    kind: ServiceKind, service: str, responses: Mapping[str, ProbeResponse]
) -> ServiceReport:
    """Build ``kind``'s report from the answers to its probe plan.

    ``responses`` maps paths (and ``show_key(id)`` for per-model answers) to answers; only
    2xx answers are read. ``service`` is the configured name the models are reported under.
    """
    b = _Builder(kind, service, responses)
    report: ServiceReport
    if kind == "ollama":
        report = _ollama(b)
    elif kind == "llamacpp":
        report = _llamacpp(b)
    elif kind == "lmstudio":
        report = _lmstudio(b)
    elif kind == "koboldcpp":
        report = _koboldcpp(b)
    elif kind == "openwebui":
        report = ServiceReport(kind, b.models("/api/models", parse_openwebui_models) or ())
    elif kind == "textgen":
        report = ServiceReport(
            kind, b.models("/v1/internal/model/info", parse_textgen_model_info) or ()
        )
    else:
        report = ServiceReport(kind, b.models("/v1/models", parse_openai_models) or ())
    if b.errors:
        report = msgspec.structs.replace(report, errors=tuple(b.errors))
    return report


def probe_input(ident: Identification, report: ServiceReport | None = None) -> HealthInput:
    """The health input for one probe cycle's identification (and report, for busy slots)."""
    if ident.verdict == "routerd":
        return "probe_routerd"
    if ident.verdict == "foreign":
        return "probe_foreign"
    if ident.verdict == "absent":
        return "probe_refused"
    if ident.verdict == "unauthorized":
        return "probe_unauthorized"
    if ident.verdict == "loading":
        return "probe_loading"
    if ident.verdict == "error":
        return "probe_error"
    if report is not None and report.all_slots_busy:
        return "probe_busy"
    return "probe_ok"


# --- Context lengths and changes ---------------------------------------------------------------

# "…-128k", "…:32k", "…_16K": an explicit window size in the name. Family guesses ("qwen
# means 128k") belong to the model database, not here: they are wrong too often.
_NAME_CTX: Final = re.compile(r"(?<![0-9a-z.])(\d{1,4})k(?![a-z0-9])")


def infer_context_from_name(name: str) -> int | None:
    """A context length written in the model's name (``128k`` -> 131072), or ``None``."""
    sizes = [int(m.group(1)) for m in _NAME_CTX.finditer(name.lower())]
    sizes = [k for k in sizes if 2 <= k <= 2048]
    return max(sizes) * 1024 if sizes else None


def resolve_context(
    model: DiscoveredModel,
    *,
    infer: Callable[[str], int | None] | None = infer_context_from_name,
    default: int | None = None,
) -> DiscoveredModel:
    """``model`` with a context length, from the best source available.

    The server's runtime window, else the server's model maximum (both ``"server"``), else
    ``infer(model.id)`` (``"name"``), else ``default`` (``"default"``). Unchanged when none
    applies.
    """
    replace = msgspec.structs.replace
    if model.context_length is not None:
        return model if model.context_source else replace(model, context_source="server")
    if model.max_context_length is not None:
        return replace(model, context_length=model.max_context_length, context_source="server")
    guessed = infer(model.id) if infer is not None else None
    if guessed is not None and guessed > 0:
        return replace(model, context_length=guessed, context_source="name")
    if default is not None and default > 0:
        return replace(model, context_length=default, context_source="default")
    return model


def diff_models(old: Sequence[DiscoveredModel], new: Sequence[DiscoveredModel]) -> ModelDiff:
    """What changed between two model lists of one service (by id, then by value).

    ``expires_at`` alone does not count as a change: Ollama pushes it forward on every
    request, and clients need not hear about that.
    """
    before = {m.id: msgspec.structs.replace(m, expires_at=None) for m in old}
    after = {m.id: msgspec.structs.replace(m, expires_at=None) for m in new}
    return ModelDiff(
        added=tuple(i for i in after if i not in before),
        removed=tuple(i for i in before if i not in after),
        changed=tuple(i for i in after if i in before and after[i] != before[i]),
    )
