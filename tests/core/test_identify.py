"""identify(): which server answered, from real captures and documented shapes."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.identify import (
    ROUTERD_INSTANCE_HEADER,
    ProbeResponse,
    identify,
    is_loading_body,
)
from routerd.core.services import default_endpoints, identity_plan

DATA = pathlib.Path(__file__).parent.parent / "data" / "servers"
DOC = DATA / "documented"
JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html; charset=utf-8"}


def capture(server: str, name: str, status: int | None = None) -> ProbeResponse:
    """A real answer from shared/real-servers: status from .status, headers from .headers."""
    base = DATA / server / name
    body = base.with_name(base.name + ".body").read_bytes()
    headers: dict[str, str] = {}
    head = base.with_name(base.name + ".headers")
    if head.exists():
        for line in head.read_text().splitlines()[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip()] = value.strip()
    stat = base.with_name(base.name + ".status")
    if status is None:
        status = int(stat.read_text().split()[0]) if stat.exists() else 200
    return ProbeResponse(status, headers, body)


def doc(name: str, status: int = 200, headers: dict[str, str] | None = None) -> ProbeResponse:
    return ProbeResponse(
        status, dict(JSON if headers is None else headers), (DOC / name).read_bytes()
    )


def j(body: str, status: int = 200) -> ProbeResponse:
    return ProbeResponse(status, dict(JSON), body.encode())


def html(status: int = 200) -> ProbeResponse:
    return ProbeResponse(status, dict(HTML), b"<!DOCTYPE html><html><body>dev server</body></html>")


NOT_FOUND_JSON = j('{"detail":"Not Found"}', 404)
EMPTY_200 = ProbeResponse(200, {}, b"")
PORT_8080 = ("llamacpp", "localai", "openwebui")
PORT_8000 = ("vllm", "llama_cpp_python")


def test_default_endpoints_share_8080_and_8000() -> None:
    by_url = {e.base_url: e.candidates for e in default_endpoints()}
    assert by_url["http://127.0.0.1:8080"] == ("openwebui", "localai", "llamacpp")
    assert by_url["http://127.0.0.1:8000"] == PORT_8000


# --- Real captures -------------------------------------------------------------------------


def test_llama_server_capture_is_llamacpp_ready() -> None:
    answers = {
        "/health": capture("llama-server", "health"),
        "/props": capture("llama-server", "props"),
        "/v1/models": capture("llama-server", "models"),
        "/slots": capture("llama-server", "slots"),
        "/readyz": capture("llama-server", "not_found"),
        "/api/version": capture("llama-server", "not_found"),
    }
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("ready", "llamacpp")
    assert ident.version == "b1-0c1e570"


def test_llama_server_recognised_by_header_alone() -> None:
    ident = identify({"/health": capture("llama-server", "health")}, candidates=("custom",))
    assert (ident.verdict, ident.kind) == ("ready", "llamacpp")
    assert "Server: llama.cpp" in ident.reason


def test_llama_server_recognised_by_ollama_style_list_without_headers() -> None:
    body = (DATA / "llama-server" / "np2" / "models.body").read_bytes()
    ident = identify({"/v1/models": ProbeResponse(200, {}, body)}, candidates=PORT_8080)
    assert ident.kind == "llamacpp"


def test_llama_server_loading_is_loading_not_offline() -> None:
    body = (DATA / "llama-server" / "startup_health_503.body").read_bytes()
    assert is_loading_body(body)
    answers = {
        "/health": ProbeResponse(503, {"Server": "llama.cpp"}, body),
        "/v1/models": ProbeResponse(
            503, {}, (DATA / "llama-server" / "startup_v1_models_503.body").read_bytes()
        ),
    }
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("loading", "llamacpp")
    # Even without the header, the loading body is llama.cpp's.
    ident = identify({"/health": ProbeResponse(503, {}, body)}, candidates=("custom",))
    assert (ident.verdict, ident.kind) == ("loading", "llamacpp")


@pytest.mark.parametrize("variant", ["", "variant2/"])
def test_llama_cpp_python_captures_on_port_8000(variant: str) -> None:
    answers = {
        "/health": capture("llama-cpp-python", "health"),
        "/version": NOT_FOUND_JSON,
        "/v1/models": capture("llama-cpp-python", f"{variant}models"),
    }
    ident = identify(answers, candidates=PORT_8000)
    assert (ident.verdict, ident.kind) == ("ready", "llama_cpp_python")


def test_llama_cpp_python_is_not_vllm_and_not_llamacpp() -> None:
    # Its 404s carry no llama.cpp marker; its list is generic but owned_by "me".
    answers = {
        "/props": capture("llama-cpp-python", "props"),
        "/slots": capture("llama-cpp-python", "slots"),
        "/v1/models": capture("llama-cpp-python", "models"),
    }
    assert identify(answers, candidates=PORT_8080).kind == "llama_cpp_python"


# --- Documented shapes, one per kind ---------------------------------------------------------


def test_ollama() -> None:
    answers = {
        "/api/version": doc("ollama_version.json"),
        "/": ProbeResponse(
            200, {"Content-Type": "text/plain"}, (DOC / "ollama_root.txt").read_bytes()
        ),
        "/api/tags": doc("ollama_tags.json"),
    }
    ident = identify(answers, candidates=("ollama",))
    assert (ident.verdict, ident.kind, ident.version) == ("ready", "ollama", "0.5.1")
    # A probe cycle sends only /api/version and /api/tags: enough where Ollama is expected.
    cycle = {"/api/version": doc("ollama_version.json"), "/api/tags": doc("ollama_tags.json")}
    assert identify(cycle, candidates=("ollama",)).kind == "ollama"


def test_localai_imitating_ollama_is_localai() -> None:
    answers = {
        "/": ProbeResponse(200, {}, b"Ollama is running"),
        "/api/version": doc("localai_ollama_version.json"),
        "/readyz": EMPTY_200,
        "/.well-known/localai.json": doc("localai_wellknown.json"),
        "/v1/models": doc("localai_models.json"),
    }
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("ready", "localai")


def test_localai_without_well_known() -> None:
    answers = {
        "/readyz": EMPTY_200,
        "/health": ProbeResponse(404, {}, b""),
        "/v1/models": doc("localai_models.json"),
        "/version": doc("localai_version.json"),
    }
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.kind, ident.version) == ("localai", "v3.1.0")


def test_a_catch_all_200_error_on_readyz_is_not_localai() -> None:
    """LM Studio answers every path it lacks with 200 and an error object: its /readyz does
    not make it LocalAI."""
    answers = {
        "/readyz": j('{"error":"Unexpected endpoint or method. (GET /readyz)"}'),
        "/v1/models": doc("localai_models.json"),
    }
    ident = identify(answers, candidates=("localai", "lmstudio"))
    assert ident.kind != "localai", ident


def test_openwebui_without_key_needs_a_key() -> None:
    answers = {
        "/health": doc("openwebui_health.json"),
        "/api/version": doc("openwebui_version.json"),
        "/api/models": doc("openwebui_401.json", 401),
    }
    for candidates in (("openwebui",), PORT_8080):
        ident = identify(answers, candidates=candidates)
        assert (ident.verdict, ident.kind) == ("unauthorized", "openwebui")
        assert "API key" in ident.reason


def test_openwebui_with_key_is_ready() -> None:
    answers = {
        "/health": doc("openwebui_health.json"),
        "/api/version": doc("openwebui_version.json"),
        "/api/models": doc("openwebui_models.json"),
    }
    ident = identify(answers, candidates=("openwebui",))
    assert (ident.verdict, ident.kind, ident.version) == ("ready", "openwebui", "0.6.5")


def test_older_openwebui_without_deployment_id() -> None:
    answers = {
        "/health": doc("openwebui_health.json"),
        "/api/version": j('{"version":"0.3.35"}'),
        "/api/models": doc("openwebui_401.json", 401),
    }
    assert identify(answers, candidates=("openwebui",)).kind == "openwebui"


def test_boolean_health_alone_is_not_openwebui() -> None:
    answers = {
        "/health": j('{"status":true}'),
        "/api/version": html(404),
        "/api/models": j('{"message":"Unauthorized"}', 401),
    }
    assert identify(answers, candidates=("openwebui",)).verdict == "foreign"


def test_grafana_on_3000_is_foreign() -> None:
    answers = {
        "/health": ProbeResponse(302, {"Location": "/login"}, b""),
        "/api/version": j('{"message":"Not found"}', 404),
        "/api/models": j('{"message":"Unauthorized"}', 401),
    }
    ident = identify(answers, candidates=("openwebui",))
    assert (ident.verdict, ident.kind) == ("foreign", None)


def test_vllm() -> None:
    answers = {
        "/health": EMPTY_200,
        "/version": doc("vllm_version.json"),
        "/v1/models": doc("vllm_models.json"),
    }
    ident = identify(answers, candidates=PORT_8000)
    assert (ident.verdict, ident.kind, ident.version) == ("ready", "vllm", "0.6.4")


def test_vllm_with_api_key_is_unauthorized_vllm() -> None:
    answers = {
        "/health": EMPTY_200,
        "/version": doc("vllm_version.json"),
        "/v1/models": j('{"error":"Unauthorized"}', 401),
    }
    ident = identify(answers, candidates=PORT_8000)
    assert (ident.verdict, ident.kind) == ("unauthorized", "vllm")


def test_lmstudio_v1_and_v0() -> None:
    for path, name in (
        ("/api/v1/models", "lmstudio_v1_models.json"),
        ("/api/v0/models", "lmstudio_v0_models.json"),
    ):
        answers = {"/v1/models": doc("lmstudio_openai_models.json"), path: doc(name)}
        ident = identify(answers, candidates=("lmstudio",))
        assert (ident.verdict, ident.kind) == ("ready", "lmstudio")


def test_lmstudio_old_version_without_rest_api_still_lmstudio_on_its_port() -> None:
    answers = {"/v1/models": doc("lmstudio_openai_models.json"), "/api/v1/models": j("{}", 404)}
    assert identify(answers, candidates=("lmstudio",)).kind == "lmstudio"


def test_koboldcpp() -> None:
    answers = {
        "/api/extra/version": doc("kobold_version.json"),
        "/api/v1/model": doc("kobold_model.json"),
    }
    ident = identify(answers, candidates=("koboldcpp",))
    assert (ident.verdict, ident.kind, ident.version) == ("ready", "koboldcpp", "1.82.4")


def test_textgen() -> None:
    answers = {"/v1/internal/model/info": doc("textgen_model_info.json")}
    ident = identify(answers, candidates=("textgen",))
    assert (ident.verdict, ident.kind) == ("ready", "textgen")


def test_jan_needs_a_key() -> None:
    answers = {"/v1/models": j('{"message":"Unauthorized"}', 401)}
    ident = identify(answers, candidates=("jan",))
    assert (ident.verdict, ident.kind) == ("unauthorized", "jan")


def test_jan_and_gpt4all_recognised_by_their_ports() -> None:
    for kind in ("jan", "gpt4all"):
        ident = identify({"/v1/models": doc("jan_models.json")}, candidates=(kind,))
        assert (ident.verdict, ident.kind) == ("ready", kind)


def test_generic_openai_list_on_a_shared_port_is_openai_compat() -> None:
    ident = identify({"/v1/models": doc("jan_models.json")}, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("ready", "openai_compat")


def test_custom_endpoint_finds_the_real_kind() -> None:
    assert identify({"/v1/models": doc("vllm_models.json")}, candidates=("custom",)).kind == "vllm"
    assert (
        identify({"/v1/models": doc("jan_models.json")}, candidates=("custom",)).kind
        == "openai_compat"
    )
    ollama = {"/api/version": doc("ollama_version.json"), "/api/tags": doc("ollama_tags.json")}
    assert identify(ollama, candidates=("custom",)).kind == "ollama"


def test_server_error_on_health_path_is_error() -> None:
    answers = {
        "/health": ProbeResponse(500, {"Server": "llama.cpp"}, b'{"error":{"code":500}}'),
    }
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("error", "llamacpp")


# --- Strangers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("candidates", [("openwebui",), ("textgen",), PORT_8080, PORT_8000])
def test_dev_server_html_is_foreign(candidates: tuple[str, ...]) -> None:
    answers = {path: html(200) for path in ("/health", "/v1/models", "/api/models", "/props")}
    answers["/api/version"] = html(404)
    ident = identify(answers, candidates=candidates)  # type: ignore[arg-type]
    assert ident.verdict == "foreign"
    assert ident.kind is None


def test_llama_cpp_python_docs_page_is_html() -> None:
    page = ProbeResponse(200, {}, (DATA / "llama-cpp-python" / "docs.body").read_bytes())
    assert identify({"/": page}, candidates=("openwebui",)).verdict == "foreign"


def test_unrelated_json_is_foreign() -> None:
    answers = {
        "/health": j('{"ok":1,"uptime":12}'),
        "/v1/models": j('{"users":[{"id":1}]}'),
        "/api/version": j('{"app":"my-dashboard","version":3}'),
    }
    assert identify(answers, candidates=PORT_8080).verdict == "foreign"


def test_airplay_receiver_on_5000_is_foreign_not_unauthorized() -> None:
    airtunes = ProbeResponse(403, {"Server": "AirTunes/670.6.2", "Content-Length": "0"}, b"")
    ident = identify({"/v1/internal/model/info": airtunes}, candidates=("textgen",))
    assert ident.verdict == "foreign"
    assert "AirPlay" in ident.reason


def test_401_on_a_port_whose_server_has_public_paths_is_foreign() -> None:
    # Open WebUI answers /health without a key; a 401 with no Open WebUI marker is someone else.
    answers = {"/health": j('{"error":"nope"}', 404), "/api/models": j('{"error":"login"}', 401)}
    assert identify(answers, candidates=("openwebui",)).verdict == "foreign"


def test_401_html_login_page_is_foreign() -> None:
    answers = {"/v1/models": html(401)}
    assert identify(answers, candidates=("jan",)).verdict == "foreign"


def test_401_on_shared_port_is_unauthorized_of_unknown_kind() -> None:
    answers = {"/v1/models": j('{"error":"key"}', 401), "/health": j("{}", 404)}
    ident = identify(answers, candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("unauthorized", None)


def test_no_answer_is_absent() -> None:
    assert identify({}, candidates=("ollama",)).verdict == "absent"


# --- routerd itself --------------------------------------------------------------------------


def test_routerd_header_is_a_loop_whatever_the_body() -> None:
    answers = {
        "/v1/models": ProbeResponse(
            200, {"x-routerd-instance": "abc123", **JSON}, (DOC / "vllm_models.json").read_bytes()
        ),
        "/health": EMPTY_200,
    }
    mine = identify(answers, candidates=PORT_8000, own_instance_id="abc123")
    assert (mine.verdict, mine.instance_id, mine.is_self) == ("routerd", "abc123", True)
    assert "this routerd" in mine.reason
    other = identify(answers, candidates=PORT_8000, own_instance_id="zzz")
    assert (other.verdict, other.is_self) == ("routerd", False)
    assert "'abc123'" in other.reason
    assert ROUTERD_INSTANCE_HEADER == "X-Routerd-Instance"


# --- Never raises --------------------------------------------------------------------------

_KINDS = st.sampled_from(
    [
        "ollama",
        "llamacpp",
        "localai",
        "openwebui",
        "vllm",
        "lmstudio",
        "jan",
        "koboldcpp",
        "gpt4all",
        "textgen",
        "llama_cpp_python",
        "custom",
    ]
)
_PATHS = st.sampled_from(
    [
        s.path
        for s in identity_plan(
            (
                "ollama",
                "llamacpp",
                "localai",
                "openwebui",
                "vllm",
                "lmstudio",
                "koboldcpp",
                "textgen",
            )
        )
    ]
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"{}",
            b"[]",
            b"null",
            b'{"data":[{"id":1}]}',
            b'{"data":"x"}',
            b'{"models":[null]}',
            b'{"error":{"message":5}}',
            b"[" * 3000,
            b'{"result":"KoboldCpp"}',
            b'{"status":true}',
            b'{"version":null}',
        ]
    ),
    st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda v: __import__("json").dumps(v).encode()),
)
_RESPONSES = st.builds(
    ProbeResponse,
    status=st.sampled_from([200, 204, 401, 403, 404, 429, 500, 503]),
    headers=st.dictionaries(
        st.sampled_from(["Server", "content-type", "X-Other"]), st.text(max_size=12), max_size=2
    ),
    body=_BODIES,
)


@settings(max_examples=300, deadline=None)
@given(
    answers=st.dictionaries(_PATHS, _RESPONSES, max_size=6),
    candidates=st.lists(_KINDS, min_size=1, max_size=3, unique=True),
)
def test_identify_never_raises(answers: dict[str, ProbeResponse], candidates: list[str]) -> None:
    ident = identify(answers, candidates=candidates)  # type: ignore[arg-type]
    assert ident.verdict in (
        "ready",
        "loading",
        "error",
        "unauthorized",
        "foreign",
        "routerd",
        "absent",
    )
    if ident.verdict == "foreign":
        assert ident.kind is None
    if ident.verdict == "ready":
        assert ident.kind is not None
