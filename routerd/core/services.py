"""The kinds of local model server routerd knows, and how to probe each one.

Invariants:

* ``SERVICES`` is the one table of kinds: default ports, API flavour, probe plan, API-key use.
  Identification rules that need code live in ``identify``; everything that is plain data
  lives here.
* Default base URLs use ``127.0.0.1``, never ``localhost``: GPT4All listens on IPv4 only and
  ``localhost`` may resolve to ``::1`` first.
* Several kinds share a port (8080: llama.cpp, LocalAI and a pip-installed Open WebUI; 8000:
  vLLM and llama-cpp-python). ``default_endpoints`` groups them so each port is probed once
  and shown once, as whatever actually answers.
* Every fact below names where it was checked. Where the seed's table was wrong, the comment
  says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "ServiceKind",
    "IDENTIFIED_KINDS",
    "ChatFlavor",
    "ApiKeyUse",
    "ProbePurpose",
    "ParserName",
    "ProbeStep",
    "ServiceSpec",
    "Endpoint",
    "SERVICES",
    "spec_for",
    "custom_spec",
    "group_endpoints",
    "default_endpoints",
    "identity_plan",
    "cycle_plan",
    "canonical_base_url",
]

#: What a server is. ``openai_compat`` is an OpenAI-compatible server that shows no brand;
#: ``custom`` is only a *configured* kind (an endpoint from config), never an identified one.
ServiceKind = Literal[
    "ollama",
    "lmstudio",
    "jan",
    "openwebui",
    "localai",
    "vllm",
    "llamacpp",
    "koboldcpp",
    "gpt4all",
    "textgen",
    "llama_cpp_python",
    "openai_compat",
    "custom",
]

#: Kinds ``identify`` may answer with (every kind except the configured-only ``custom``).
IDENTIFIED_KINDS: Final[tuple[ServiceKind, ...]] = tuple(
    k for k in get_args(ServiceKind) if k != "custom"
)

#: How chat requests are sent: Ollama's native NDJSON API or OpenAI-style SSE.
ChatFlavor = Literal["ollama", "openai"]

#: Whether the server wants an API key: never has one, may be configured to, or always does.
ApiKeyUse = Literal["never", "optional", "required"]

#: Why a path is fetched. ``health`` decides readiness; the others feed model discovery.
ProbePurpose = Literal["health", "identity", "models", "loaded", "props", "slots", "context"]

#: Which parser in ``model_parsers`` reads the answer (``none``: only the status matters).
ParserName = Literal[
    "none",
    "ollama_version",
    "ollama_tags",
    "ollama_ps",
    "ollama_show",
    "openai_models",
    "llamacpp_props",
    "llamacpp_slots",
    "lmstudio_v0",
    "lmstudio_v1",
    "kobold_version",
    "kobold_model",
    "kobold_max_context",
    "openwebui_models",
    "textgen_model_info",
]


class ProbeStep(msgspec.Struct, frozen=True):
    """One HTTP request of a probe plan.

    ``each_cycle`` steps run on every probe interval (cheap readiness and "what is loaded
    now"); the others run at discovery only. ``per_model`` steps are POSTed once per model
    with the JSON body ``{"model": <id>}`` (Ollama's ``/api/show``). ``needs_key`` records
    the server's API (the path answers 401 without the key when one is set); the configured
    key goes with every step of a service alike.
    """

    path: str
    purpose: ProbePurpose
    parser: ParserName = "none"
    each_cycle: bool = False
    method: Literal["GET", "POST"] = "GET"
    per_model: bool = False
    needs_key: bool = False


class ServiceSpec(msgspec.Struct, frozen=True):
    """A kind of server: where it usually listens and how routerd talks to it.

    ``public_identity`` says whether the server answers some identifying path without a key;
    when it does, a 401 from an unrecognised endpoint on its port means "someone else".
    """

    kind: ServiceKind
    display_name: str
    ports: tuple[int, ...]
    chat_flavor: ChatFlavor
    chat_path: str
    plan: tuple[ProbeStep, ...]
    api_key: ApiKeyUse
    public_identity: bool
    host: str = "127.0.0.1"

    @property
    def base_urls(self) -> tuple[str, ...]:
        """``http://host:port`` for every default port, in order of preference."""
        return tuple(f"http://{self.host}:{port}" for port in self.ports)


def _get(
    path: str,
    purpose: ProbePurpose,
    parser: ParserName = "none",
    *,
    cycle: bool = False,
    key: bool = False,
) -> ProbeStep:
    return ProbeStep(path, purpose, parser, each_cycle=cycle, needs_key=key)


# --- The table ---------------------------------------------------------------------------------
#
# Sources (read with the search tool):
#   Ollama      ollama/ollama docs/api.md: /api/version, /api/tags, /api/show (model_info
#               "<arch>.context_length", capabilities), /api/ps (size_vram, expires_at,
#               context_length); server/sched.go: 503 "server busy ... maximum pending
#               requests exceeded". No API key. Port 11434.
#   llama.cpp   ggml-org/llama.cpp tools/server/README.md: /health (503 "Loading model" while
#               loading, public even with --api-key), /props, /slots, /v1/models (meta.n_ctx,
#               n_ctx_train; router mode adds status.value), --api-key. common/common.h: port
#               8080. The newest stored README says 9931 in its --port help and examples while
#               common.h (and every older README) says 8080: both ports are probed.
#   LocalAI     mudler/LocalAI core/http/routes/health.go: /healthz and /readyz answer 200 with
#               an empty body; routes/localai.go: /version, /.well-known/localai.json;
#               routes/ollama.go: LocalAI also answers Ollama's /api/tags, /api/ps, /api/show
#               and /api/version (always "0.9.0"), so those paths alone do not prove Ollama.
#               Docs: port 8080, API key optional.
#   LM Studio   lmstudio-ai/docs: port 1234; /v1/models; /api/v0/models (0.3.6+, deprecated:
#               state loaded/not-loaded, max_context_length); /api/v1/models (0.4+: key,
#               loaded_instances[].config.context_length, max_context_length, capabilities);
#               API tokens optional since 0.4.
#   Jan         jan.ai docs (local API server): 127.0.0.1:1337, an API key is *required* for
#               every request; the ``jan serve`` CLI (0.7.8+) serves on localhost:6767/v1.
#               The seed did not say Jan needs a key.
#   Open WebUI  open-webui backend/open_webui/main.py: /health -> {"status": true} (public),
#               /api/version -> {"version", "deployment_id"} (public), /api/models needs a
#               bearer key. The server listens on 8080 (``open-webui serve``, the image's
#               port); 3000 is only the usual Docker mapping (3000:8080). The seed had 3000
#               and "/api/health", which does not exist.
#   vLLM        docs.vllm.ai (``vllm serve``): port 8000, /health (200, empty body),
#               /version, /v1/models with owned_by "vllm" and max_model_len; --api-key
#               optional.
#   KoboldCpp   LostRuins/koboldcpp koboldcpp.py: defaultport 5001; /api/extra/version ->
#               {"result": "KoboldCpp", "version"}; /api/v1/model -> {"result":
#               "koboldcpp/<name>"} ("inactive" with no model); /api/extra/
#               true_max_context_length -> {"value"}; --password optional. The seed's
#               "/api/v1/info" and "/api/v1/models" do not exist; chat goes to the OpenAI
#               /v1/chat/completions it also serves ("/api/v1/generate" is raw completion).
#   GPT4All     nomic-ai/gpt4all docs (API server): port 4891, 127.0.0.1 only (not ::1),
#               /v1/models, /v1/chat/completions, no key.
#   text-generation-webui  oobabooga docs (OpenAI-compatible API, --api): port 5000,
#               /v1/models, /v1/internal/model/info -> {"model_name", "lora_names"},
#               --api-key optional. The seed's "/api/v1/model" and "/api/v1/chat" are the
#               legacy API removed in late 2023.
#   llama-cpp-python  ../shared/real-servers captures: uvicorn on port 8000 (its default),
#               no /health, /props or /slots (404 {"detail": "Not Found"}), /v1/models with
#               owned_by "me". Not in the seed, but it shares vLLM's port, so it must be
#               recognised rather than mistaken for vLLM.

_OPENAI_MODELS = _get("/v1/models", "models", "openai_models", cycle=True, key=True)

SERVICES: Final[tuple[ServiceSpec, ...]] = (
    ServiceSpec(
        kind="ollama",
        display_name="Ollama",
        ports=(11434,),
        chat_flavor="ollama",
        chat_path="/api/chat",
        plan=(
            _get("/api/version", "health", "ollama_version", cycle=True),
            _get("/", "identity"),
            _get("/api/tags", "models", "ollama_tags", cycle=True),
            _get("/api/ps", "loaded", "ollama_ps", cycle=True),
            ProbeStep("/api/show", "context", "ollama_show", method="POST", per_model=True),
        ),
        api_key="never",
        public_identity=True,
    ),
    ServiceSpec(
        kind="lmstudio",
        display_name="LM Studio",
        ports=(1234,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _OPENAI_MODELS,
            _get("/api/v1/models", "models", "lmstudio_v1", cycle=True, key=True),
            _get("/api/v0/models", "models", "lmstudio_v0", cycle=True, key=True),
        ),
        api_key="optional",
        public_identity=False,
    ),
    ServiceSpec(
        kind="jan",
        display_name="Jan",
        ports=(1337, 6767),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(_OPENAI_MODELS,),
        api_key="required",
        public_identity=False,
    ),
    ServiceSpec(
        kind="openwebui",
        display_name="Open WebUI",
        ports=(3000, 8080),
        chat_flavor="openai",
        chat_path="/api/chat/completions",
        plan=(
            _get("/health", "health", cycle=True),
            _get("/api/version", "identity"),
            _get("/api/models", "models", "openwebui_models", cycle=True, key=True),
        ),
        api_key="required",
        public_identity=True,
    ),
    ServiceSpec(
        kind="localai",
        display_name="LocalAI",
        ports=(8080,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _get("/readyz", "health", cycle=True),
            _get("/.well-known/localai.json", "identity"),
            _get("/version", "identity"),
            _OPENAI_MODELS,
        ),
        api_key="optional",
        public_identity=True,
    ),
    ServiceSpec(
        kind="vllm",
        display_name="vLLM",
        ports=(8000,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _get("/health", "health", cycle=True),
            _get("/version", "identity"),
            _OPENAI_MODELS,
        ),
        api_key="optional",
        public_identity=True,
    ),
    ServiceSpec(
        kind="llamacpp",
        display_name="llama.cpp server",
        ports=(8080, 9931),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _get("/health", "health", cycle=True),
            _get("/props", "props", "llamacpp_props", key=True),
            # Public even with --api-key, as /health is (llama-server's public endpoints).
            _get("/v1/models", "models", "openai_models", cycle=True),
            _get("/slots", "slots", "llamacpp_slots", cycle=True, key=True),
        ),
        api_key="optional",
        public_identity=True,
    ),
    ServiceSpec(
        kind="koboldcpp",
        display_name="KoboldCpp",
        ports=(5001,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _get("/api/extra/version", "health", "kobold_version", cycle=True),
            _get("/api/v1/model", "models", "kobold_model", cycle=True, key=True),
            _get("/api/extra/true_max_context_length", "context", "kobold_max_context", key=True),
        ),
        api_key="optional",
        public_identity=True,
    ),
    ServiceSpec(
        kind="gpt4all",
        display_name="GPT4All",
        ports=(4891,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(_OPENAI_MODELS,),
        api_key="never",
        public_identity=True,
    ),
    ServiceSpec(
        kind="textgen",
        display_name="text-generation-webui",
        ports=(5000,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(
            _get("/v1/internal/model/info", "health", "textgen_model_info", cycle=True, key=True),
        ),
        api_key="optional",
        public_identity=False,
    ),
    ServiceSpec(
        kind="llama_cpp_python",
        display_name="llama-cpp-python server",
        ports=(8000,),
        chat_flavor="openai",
        chat_path="/v1/chat/completions",
        plan=(_OPENAI_MODELS,),
        api_key="optional",
        public_identity=True,
    ),
)

_GENERIC_OPENAI: Final = ServiceSpec(
    kind="openai_compat",
    display_name="OpenAI-compatible server",
    ports=(),
    chat_flavor="openai",
    chat_path="/v1/chat/completions",
    plan=(_OPENAI_MODELS,),
    api_key="optional",
    public_identity=False,
)

_BY_KIND: Final[dict[str, ServiceSpec]] = {s.kind: s for s in (*SERVICES, _GENERIC_OPENAI)}


def spec_for(kind: ServiceKind) -> ServiceSpec:
    """The table entry for ``kind``. ``custom`` maps to the generic OpenAI-compatible entry."""
    return _BY_KIND.get(kind, _GENERIC_OPENAI)


def custom_spec(flavor: ChatFlavor) -> ServiceSpec:
    """The probe plan for a configured endpoint of API flavour ``flavor``.

    Identification may still find a known kind behind it (a vLLM on another port, say);
    the shell then switches to that kind's plan.
    """
    base = spec_for("ollama") if flavor == "ollama" else _GENERIC_OPENAI
    return msgspec.structs.replace(base, kind="custom", display_name="custom endpoint", ports=())


class Endpoint(msgspec.Struct, frozen=True):
    """One base URL to probe and the kinds that may answer there, most likely first."""

    base_url: str
    candidates: tuple[ServiceKind, ...]


def group_endpoints(claims: Iterable[tuple[ServiceKind, str]]) -> tuple[Endpoint, ...]:
    """One ``Endpoint`` per server address, from ``(kind, base_url)`` claims in priority order.

    Claims whose URLs name the same server (``canonical_base_url``) share one endpoint, so a
    port two kinds claim is probed once and shown once; the first spelling of the URL is kept.
    """
    order: list[str] = []
    urls: dict[str, str] = {}
    kinds: dict[str, list[ServiceKind]] = {}
    for kind, url in claims:
        key = canonical_base_url(url)
        if key not in kinds:
            order.append(key)
            urls[key] = url.rstrip("/")
            kinds[key] = []
        if kind not in kinds[key]:
            kinds[key].append(kind)
    return tuple(Endpoint(urls[key], tuple(kinds[key])) for key in order)


def default_endpoints(specs: Iterable[ServiceSpec] = SERVICES) -> tuple[Endpoint, ...]:
    """Every default base URL of the table once, with all the kinds that claim it."""
    return group_endpoints((spec.kind, url) for spec in specs for url in spec.base_urls)


def _dedupe(steps: Iterable[ProbeStep]) -> tuple[ProbeStep, ...]:
    seen: set[tuple[str, str]] = set()
    out: list[ProbeStep] = []
    for step in steps:
        key = (step.method, step.path)
        if key not in seen:
            seen.add(key)
            out.append(step)
    return tuple(out)


def identity_plan(candidates: Sequence[ServiceKind]) -> tuple[ProbeStep, ...]:
    """The GETs that tell the candidates apart: the union of their discovery plans.

    Per-model steps are left out (they need the model list first). Each path appears once.
    """
    return _dedupe(
        step for kind in candidates for step in spec_for(kind).plan if not step.per_model
    )


def cycle_plan(kind: ServiceKind) -> tuple[ProbeStep, ...]:
    """The steps to repeat on every probe interval once ``kind`` is known."""
    return tuple(step for step in spec_for(kind).plan if step.each_cycle)


_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def canonical_base_url(url: str) -> str:
    """A key under which two spellings of one server compare equal.

    ``http://localhost:11434/``, ``http://127.0.0.1:11434`` and ``http://[::1]:11434`` all
    become ``http://loopback:11434``; default ports are made explicit and the path loses its
    trailing slash. A string that is not a URL comes back lower-cased and stripped.
    """
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return url.strip().lower()
    scheme = (parts.scheme or "http").lower()
    if not host:
        return url.strip().lower()
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        host = "loopback"
    elif ":" in host:
        host = f"[{host}]"
    if port is None:
        port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"
