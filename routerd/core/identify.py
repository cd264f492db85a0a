"""Who answered a probe: which model server, a stranger, or routerd itself.

Invariants:

* ``identify`` is a pure function of the HTTP answers collected for one endpoint (path ->
  status, headers, body). Connection failures never reach it: the shell turns those into
  health inputs directly.
* routerd marks every HTTP answer of its own fronts with ``ROUTERD_INSTANCE_HEADER``; any
  answer carrying it is a loop and is refused, whatever else it says.
* Decisive markers win over port numbers: llama.cpp's ``Server: llama.cpp`` header or its
  ``/props``, LocalAI's ``/.well-known/localai.json``, KoboldCpp's ``/api/extra/version``
  and so on. A port only decides between kinds that show no marker (Jan, GPT4All).
* Dev servers on 3000/5000/8000/8080 answer HTML or unrelated JSON: that is ``foreign``,
  never ``ready``. macOS's AirPlay receiver answers 403 on 5000 (``Server: AirTunes``):
  foreign too, not "needs a key".
* 401 and 403 mean "needs a key", never "down".
* Nothing here raises on any bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from routerd.core.jsonpick import INVALID, decode_json, pick, pick_dict, pick_list, pick_str
from routerd.core.services import ServiceKind, spec_for

__all__ = [
    "ROUTERD_INSTANCE_HEADER",
    "ProbeResponse",
    "Verdict",
    "Identification",
    "identify",
    "header",
    "is_loading_body",
    "looks_like_html",
]

#: Response header routerd puts on every answer of its own HTTP fronts; its value is the
#: daemon's instance id. An endpoint answering with it is routerd, and is never a backend.
ROUTERD_INSTANCE_HEADER: Final = "X-Routerd-Instance"

Verdict = Literal["ready", "loading", "error", "unauthorized", "foreign", "routerd", "absent"]


class ProbeResponse(msgspec.Struct, frozen=True):
    """One HTTP answer as the shell received it. Header names may be in any case."""

    status: int
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""


class Identification(msgspec.Struct, frozen=True, omit_defaults=True):
    """The verdict on one endpoint.

    ``kind`` is ``None`` when nothing says what the server is (foreign, absent, or a 401
    from an endpoint several kinds share). ``instance_id`` is set for ``routerd`` verdicts;
    ``is_self`` says whether it is this daemon.
    """

    verdict: Verdict
    kind: ServiceKind | None = None
    reason: str = ""
    version: str | None = None
    instance_id: str | None = None
    is_self: bool = False


def header(resp: ProbeResponse, name: str) -> str | None:
    """The value of header ``name`` (case-insensitive), or ``None``."""
    wanted = name.lower()
    for key, value in resp.headers.items():
        if key.lower() == wanted:
            return value
    return None


def looks_like_html(resp: ProbeResponse) -> bool:
    """A web page rather than an API answer (by content type or by its first byte)."""
    ctype = (header(resp, "content-type") or "").lower()
    return "html" in ctype or resp.body.lstrip()[:1] == b"<"


def is_loading_body(body: bytes) -> bool:
    """llama.cpp's answer while it loads a model:
    ``{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}``."""
    value = decode_json(body)
    message = pick_str(value, "error", "message") or ""
    return message.lower().startswith("loading model") or (
        pick_str(value, "error", "type") == "unavailable_error" and "load" in message.lower()
    )


# --- Reading the answers -----------------------------------------------------------------------


class _Answers:
    """The collected answers with decoded JSON cached, and small questions about them."""

    def __init__(self, responses: Mapping[str, ProbeResponse]) -> None:
        self.responses = responses
        self._json: dict[str, Any] = {}

    def get(self, path: str) -> ProbeResponse | None:
        return self.responses.get(path)

    def json(self, path: str, *, ok_only: bool = True) -> Any:
        """The decoded JSON body at ``path`` (``None`` if absent, failed or not JSON)."""
        resp = self.responses.get(path)
        if resp is None or (ok_only and not 200 <= resp.status < 300):
            return None
        if path not in self._json:
            value = decode_json(resp.body)
            self._json[path] = None if value is INVALID else value
        return self._json[path]

    def ok(self, path: str) -> bool:
        resp = self.responses.get(path)
        return resp is not None and 200 <= resp.status < 300

    def server_header(self) -> str:
        for resp in self.responses.values():
            value = header(resp, "server")
            if value:
                return value
        return ""

    def openai_list(self, path: str = "/v1/models") -> list[Any] | None:
        """``data`` of an OpenAI model list at ``path`` whose entries have string ids."""
        data = pick_list(self.json(path), "data")
        if data is None or not all(isinstance(pick_str(e, "id"), str) for e in data):
            return None
        return data

    def owners(self) -> set[str]:
        return {o for e in self.openai_list() or () if (o := pick_str(e, "owned_by"))}


def _marker_llamacpp(a: _Answers) -> str | None:
    if a.server_header().lower().startswith("llama.cpp"):
        return "Server: llama.cpp header"
    props = a.json("/props")
    if isinstance(props, dict) and (
        "default_generation_settings" in props or "total_slots" in props
    ):
        return "/props"
    if "llamacpp" in a.owners():
        return "/v1/models owned_by llamacpp"
    models = a.json("/v1/models")
    if isinstance(pick_list(models, "models"), list) and a.openai_list() is not None:
        return "/v1/models with an Ollama-style models list"
    return None


def _marker_localai(a: _Answers) -> str | None:
    if isinstance(pick_dict(a.json("/.well-known/localai.json"), "endpoints"), dict):
        return "/.well-known/localai.json"
    readyz = a.get("/readyz")
    if (
        readyz is not None
        and a.ok("/readyz")
        and not looks_like_html(readyz)
        # LM Studio answers every path it lacks with 200 {"error": "Unexpected endpoint..."}.
        and pick(a.json("/readyz"), "error") is None
        and a.openai_list() is not None
    ):
        return "/readyz and /v1/models"
    return None


def _marker_openwebui(a: _Answers) -> str | None:
    version = a.json("/api/version")
    if isinstance(pick_str(version, "deployment_id"), str):
        return "/api/version deployment_id"
    # Older releases have no deployment_id; a boolean health status alone is too common.
    if pick(a.json("/health"), "status") is True and isinstance(pick_str(version, "version"), str):
        return "/health status true and /api/version"
    return None


def _marker_koboldcpp(a: _Answers) -> str | None:
    if pick_str(a.json("/api/extra/version"), "result") == "KoboldCpp":
        return "/api/extra/version"
    model = pick_str(a.json("/api/v1/model"), "result") or ""
    if model.startswith("koboldcpp/"):
        return "/api/v1/model"
    return None


def _marker_lmstudio(a: _Answers) -> str | None:
    v1 = pick_list(a.json("/api/v1/models"), "models")
    if v1 is not None and all(isinstance(pick(e, "loaded_instances"), list) for e in v1):
        return "/api/v1/models"
    v0 = pick_list(a.json("/api/v0/models"), "data")
    if v0 and all(isinstance(pick_str(e, "state"), str) for e in v0):
        return "/api/v0/models"
    return None


def _marker_textgen(a: _Answers) -> str | None:
    info = a.json("/v1/internal/model/info")
    if isinstance(pick_str(info, "model_name"), str) and isinstance(pick(info, "lora_names"), list):
        return "/v1/internal/model/info"
    return None


def _marker_vllm(a: _Answers) -> str | None:
    if "vllm" in a.owners():
        return "/v1/models owned_by vllm"
    if any(isinstance(pick(e, "max_model_len"), int) for e in a.openai_list() or ()):
        return "/v1/models max_model_len"
    return None


def _marker_llama_cpp_python(a: _Answers) -> str | None:
    data = a.openai_list()
    if data and all(
        pick_str(e, "owned_by") == "me" and isinstance(pick(e, "permissions"), list) for e in data
    ):
        return "/v1/models owned_by me"
    return None


def _marker_ollama(a: _Answers) -> str | None:
    root = a.get("/")
    if root is not None and a.ok("/") and root.body.startswith(b"Ollama is running"):
        return "GET / says Ollama is running"
    return None


# LocalAI imitates Ollama's paths (even "Ollama is running" on "/" behind a flag), so it is
# asked first; llama.cpp's /v1/models imitates Ollama's model list, so it comes first too.
_MARKERS: Final[tuple[tuple[ServiceKind, Callable[[_Answers], str | None]], ...]] = (
    ("llamacpp", _marker_llamacpp),
    ("localai", _marker_localai),
    ("koboldcpp", _marker_koboldcpp),
    ("openwebui", _marker_openwebui),
    ("lmstudio", _marker_lmstudio),
    ("textgen", _marker_textgen),
    ("vllm", _marker_vllm),
    ("llama_cpp_python", _marker_llama_cpp_python),
    ("ollama", _marker_ollama),
)


def _weak(kind: ServiceKind, a: _Answers) -> str | None:
    """Evidence too weak to name a kind on its own, enough when the kind is expected here."""
    if kind == "ollama":
        if isinstance(pick_str(a.json("/api/version"), "version"), str):
            return "/api/version"
        if isinstance(pick_list(a.json("/api/tags"), "models"), list):
            return "/api/tags"
    elif kind in ("vllm", "localai"):
        # Both answer their readiness path with an empty 200 and name a version at /version;
        # those stay public when /v1 needs a key.
        path = "/health" if kind == "vllm" else "/readyz"
        ready = a.get(path)
        version = pick_str(a.json("/version"), "version")
        if ready is not None and a.ok(path) and not ready.body.strip() and version is not None:
            return f"{path} and /version"
    return None


def _recognise(a: _Answers, candidates: Sequence[ServiceKind]) -> tuple[ServiceKind, str] | None:
    for kind, marker in _MARKERS:
        evidence = marker(a)
        if evidence is not None:
            return kind, evidence
    for candidate in candidates:
        evidence = _weak(candidate, a)
        if evidence is not None:
            return candidate, evidence
    if "custom" in candidates and (evidence := _weak("ollama", a)) is not None:
        return "ollama", evidence
    if a.openai_list() is not None:
        known = [c for c in candidates if c != "custom"]
        return (known[0] if len(known) == 1 else "openai_compat"), "/v1/models"
    return None


def _version(kind: ServiceKind, a: _Answers) -> str | None:
    if kind == "ollama":
        return pick_str(a.json("/api/version"), "version")
    if kind == "koboldcpp":
        return pick_str(a.json("/api/extra/version"), "version")
    if kind == "llamacpp":
        return pick_str(a.json("/props"), "build_info")
    if kind in ("vllm", "localai"):
        return pick_str(a.json("/version"), "version")
    if kind == "openwebui":
        return pick_str(a.json("/api/version"), "version")
    return None


def _readiness(kind: ServiceKind, a: _Answers) -> tuple[Verdict, str]:
    """Ready, loading, error or unauthorized, from the kind's own health and model paths."""
    plan = spec_for(kind).plan
    health = [s.path for s in plan if s.purpose == "health" and s.path in a.responses]
    models = [s.path for s in plan if s.purpose == "models" and s.path in a.responses]
    for path in (*health, *models):
        resp = a.responses[path]
        if resp.status in (401, 403):
            return "unauthorized", f"{path} answered {resp.status}: an API key is needed"
    for path in health or models:
        resp = a.responses[path]
        if resp.status == 503 and is_loading_body(resp.body):
            return "loading", f"{path}: loading model"
        if resp.status >= 500:
            return "error", f"{path} answered {resp.status}"
        if 200 <= resp.status < 300:
            return "ready", f"{path} answered {resp.status}"
    return "ready", "recognised"


def _foreign_reason(a: _Answers) -> str:
    server = a.server_header()
    if server.lower().startswith("airtunes"):
        return f"macOS AirPlay receiver ({server})"
    if any(looks_like_html(r) for r in a.responses.values()):
        return "answers with web pages, not a model API"
    return "answers, but with nothing a model server says"


def identify(
    responses: Mapping[str, ProbeResponse],
    *,
    candidates: Sequence[ServiceKind],
    own_instance_id: str | None = None,
) -> Identification:
    """Decide what answered at one endpoint.

    ``responses`` maps each probed path to its answer (paths that failed to connect are
    simply absent). ``candidates`` are the kinds configured or expected there, most likely
    first (``("custom",)`` for a configured endpoint of unknown kind). ``own_instance_id`` is
    this daemon's id, to tell "myself" from "another routerd" in the reason.
    """
    if not responses:
        return Identification("absent", reason="no HTTP answer")
    for path, resp in responses.items():
        instance = header(resp, ROUTERD_INSTANCE_HEADER)
        if instance is not None:
            mine = own_instance_id is not None and instance == own_instance_id
            who = "this routerd" if mine else f"routerd instance {instance!r}"
            return Identification(
                "routerd",
                reason=f"{path} was answered by {who}: refusing a loop",
                instance_id=instance,
                is_self=mine,
            )
    a = _Answers(responses)
    if a.server_header().lower().startswith("airtunes"):
        return Identification("foreign", reason=_foreign_reason(a))
    for path, resp in responses.items():
        if resp.status == 503 and is_loading_body(resp.body):
            found = _recognise(a, candidates)
            kind: ServiceKind = found[0] if found else "llamacpp"
            return Identification("loading", kind, f"{path}: loading model", _version(kind, a))
    found = _recognise(a, candidates)
    if found is not None:
        kind, evidence = found
        verdict, detail = _readiness(kind, a)
        return Identification(verdict, kind, f"{evidence}; {detail}", _version(kind, a))
    refusals = [
        (path, r)
        for path, r in responses.items()
        if r.status in (401, 403) and not looks_like_html(r)
    ]
    if refusals:
        path, resp = refusals[0]
        guess = candidates[0] if len(candidates) == 1 and candidates[0] != "custom" else None
        if guess is not None and spec_for(guess).public_identity:
            # It would have shown itself on a public path; whoever refused us is someone else.
            return Identification(
                "foreign",
                reason=f"{path} answered {resp.status} and "
                f"nothing identifies {spec_for(guess).display_name}",
            )
        return Identification(
            "unauthorized", guess, f"{path} answered {resp.status}: an API key is needed"
        )
    return Identification("foreign", reason=_foreign_reason(a))
