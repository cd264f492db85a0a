"""The per-API model parsers: real captures, documented shapes, and garbage."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.model_parsers import (
    LlamaCppProps,
    OllamaShow,
    ParseError,
    SlotsInfo,
    parse_llamacpp_props,
    parse_llamacpp_slots,
    parse_ollama_ps,
    parse_ollama_show,
    parse_ollama_tags,
    parse_ollama_version,
    parse_openai_models,
)
from routerd.core.vendor_parsers import (
    parse_kobold_max_context,
    parse_kobold_model,
    parse_kobold_version,
    parse_lmstudio_v0,
    parse_lmstudio_v1,
    parse_openwebui_models,
    parse_textgen_model_info,
)

DATA = pathlib.Path(__file__).parent.parent / "data" / "servers"
DOC = DATA / "documented"


def body(*parts: str) -> bytes:
    return DATA.joinpath(*parts).read_bytes()


def doc(name: str) -> bytes:
    return (DOC / name).read_bytes()


# --- llama.cpp (real captures) ---------------------------------------------------------------


def test_llama_server_models_capture() -> None:
    models = parse_openai_models(body("llama-server", "models.body"), "lcpp")
    assert not isinstance(models, ParseError)
    (m,) = models
    assert m.id == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert m.service == "lcpp"
    assert (m.context_length, m.context_source, m.max_context_length) == (2048, "server", 8192)
    assert m.loaded is True
    assert m.capabilities == ("completion",)  # from the Ollama-style "models" list
    assert (m.size_bytes, m.quantization, m.owned_by) == (96576768, "Q4_1", "llamacpp")
    assert m.aliases == ()  # the only alias is the id itself


def test_llama_server_np2_models_capture() -> None:
    models = parse_openai_models(body("llama-server", "np2", "models.body"), "s")
    assert not isinstance(models, ParseError)
    assert [(m.id, m.context_length) for m in models] == [("smollm2-135m", 1024)]


def test_llama_server_props_capture() -> None:
    props = parse_llamacpp_props(body("llama-server", "props.body"))
    assert props == LlamaCppProps(
        n_ctx=2048,
        total_slots=4,
        model_path="/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        model_alias="/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        build_info="b1-0c1e570",
        media_marker="<__media_73VeNVhph2Mz7zUwXPmrAhfq9my5P1gL__>",
        is_sleeping=False,
        vision=False,
    )


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("llama-server", "slots.body"), SlotsInfo(total=4, processing=0, n_ctx=2048)),
        (("llama-server", "np2", "slots.body"), SlotsInfo(total=2, processing=0, n_ctx=1024)),
        (("llama-server", "np2", "slots_busy.body"), SlotsInfo(total=2, processing=2, n_ctx=1024)),
    ],
)
def test_llama_server_slots_captures(parts: tuple[str, ...], expected: SlotsInfo) -> None:
    slots = parse_llamacpp_slots(body(*parts))
    assert slots == expected
    assert isinstance(slots, SlotsInfo)
    assert slots.all_busy == (expected.processing == expected.total)


def test_llama_cpp_python_models_captures() -> None:
    for parts in (("models.body",), ("variant2", "models.body")):
        models = parse_openai_models(body("llama-cpp-python", *parts), "p")
        assert not isinstance(models, ParseError)
        (m,) = models
        assert (m.context_length, m.loaded, m.owned_by) == (None, None, "me")
    ids = parse_openai_models(body("llama-cpp-python", "variant2", "models.body"), "p")
    assert not isinstance(ids, ParseError)
    assert ids[0].id == "smollm2-135m"


def test_llama_cpp_python_404_is_not_props() -> None:
    assert isinstance(parse_llamacpp_slots(body("llama-cpp-python", "slots.body")), ParseError)
    assert isinstance(parse_openai_models(body("llama-cpp-python", "props.body"), "p"), ParseError)


def test_llamacpp_router_mode_status() -> None:
    models = parse_openai_models(doc("llamacpp_router_models.json"), "r")
    assert not isinstance(models, ParseError)
    assert [(m.id, m.loaded, m.state) for m in models] == [
        ("ggml-org/gemma-3-4b-it-GGUF:Q4_K_M", True, "loaded"),
        ("my-other-model", False, "unloaded"),
    ]


def test_vllm_max_model_len() -> None:
    models = parse_openai_models(doc("vllm_models.json"), "v")
    assert not isinstance(models, ParseError)
    (m,) = models
    assert (m.context_length, m.context_source, m.max_context_length, m.loaded) == (
        32768,
        "server",
        32768,
        True,
    )


# --- Ollama ------------------------------------------------------------------------------------


def test_ollama_tags() -> None:
    models = parse_ollama_tags(doc("ollama_tags.json"), "o")
    assert not isinstance(models, ParseError)
    assert [m.id for m in models] == ["codellama:13b", "llama3:latest"]
    m = models[1]
    assert (m.size_bytes, m.family, m.parameter_size, m.quantization) == (
        3825819519,
        "llama",
        "7B",
        "Q4_0",
    )
    assert m.context_length is None and m.loaded is None
    assert m.digest is not None and m.digest.startswith("fe938a13")


def test_ollama_ps() -> None:
    models = parse_ollama_ps(doc("ollama_ps.json"), "o")
    assert not isinstance(models, ParseError)
    (m,) = models
    assert (m.id, m.loaded, m.size_vram, m.size_bytes) == (
        "llama3:latest",
        True,
        4137025024,
        5137025024,
    )
    assert (m.context_length, m.context_source) == (4096, "server")
    assert m.expires_at == pytest.approx(1717537111.83753)


def test_ollama_ps_timestamps() -> None:
    def expires(value: str) -> float | None:
        raw = json.dumps({"models": [{"name": "m", "expires_at": value}]}).encode()
        models = parse_ollama_ps(raw, "o")
        assert not isinstance(models, ParseError)
        return models[0].expires_at

    assert expires("2025-10-17T16:47:07.933550123-07:00") == pytest.approx(1760744827.93355)
    assert expires("2024-01-01T00:00:00") == 1704067200.0  # no offset: UTC, not local time
    assert expires("0001-01-01T00:00:00Z") is None
    assert expires("tomorrow") is None


def test_ollama_show() -> None:
    show = parse_ollama_show(doc("ollama_show.json"))
    assert show == OllamaShow(
        context_length=8192,
        architecture="llama",
        capabilities=("completion", "tools"),
        num_ctx=4096,
        family="llama",
        parameter_size="8.0B",
        quantization="Q4_0",
    )


def test_localai_show_uses_general_context_length() -> None:
    show = parse_ollama_show(doc("localai_ollama_show.json"))
    assert isinstance(show, OllamaShow)
    assert (show.context_length, show.architecture) == (16384, "llama-cpp")


def test_ollama_show_other_architecture() -> None:
    raw = {
        "model_info": {
            "general.architecture": "qwen2",
            "qwen2.context_length": 32768,
            "general.context_length": 4,
        }
    }
    show = parse_ollama_show(json.dumps(raw).encode())
    assert isinstance(show, OllamaShow) and show.context_length == 32768


def test_ollama_version() -> None:
    assert parse_ollama_version(doc("ollama_version.json")) == "0.5.1"
    assert isinstance(parse_ollama_version(b'{"version": 5}'), ParseError)


# --- LM Studio ---------------------------------------------------------------------------------


def test_lmstudio_v0() -> None:
    models = parse_lmstudio_v0(doc("lmstudio_v0_models.json"), "l")
    assert not isinstance(models, ParseError)
    got = [(m.id, m.loaded, m.max_context_length, m.capabilities) for m in models]
    assert got == [
        ("qwen2-vl-7b-instruct", False, 32768, ("completion", "vision")),
        ("meta-llama-3.1-8b-instruct", True, 131072, ("completion",)),
        ("text-embedding-nomic-embed-text-v1.5", False, 2048, ("embedding",)),
    ]
    assert all(m.context_length is None for m in models)  # the loaded window is not said


def test_lmstudio_v1() -> None:
    models = parse_lmstudio_v1(doc("lmstudio_v1_models.json"), "l")
    assert not isinstance(models, ParseError)
    gemma, nomic = models
    assert (gemma.id, gemma.loaded, gemma.context_length, gemma.max_context_length) == (
        "gemma-3-270m-it-qat",
        True,
        4096,
        32768,
    )
    assert (gemma.quantization, gemma.parameter_size, gemma.state) == ("Q4_0", "270M", "loaded")
    assert (nomic.loaded, nomic.context_length, nomic.capabilities) == (False, None, ("embedding",))


# --- KoboldCpp, Open WebUI, text-generation-webui ------------------------------------------------


def test_kobold() -> None:
    assert parse_kobold_version(doc("kobold_version.json")) == "1.82.4"
    models = parse_kobold_model(doc("kobold_model.json"), "k")
    assert not isinstance(models, ParseError)
    assert [(m.id, m.loaded) for m in models] == [
        ("koboldcpp/Qwen2.5-Coder-7B-Instruct-Q4_K_M", True)
    ]
    assert parse_kobold_model(doc("kobold_model_inactive.json"), "k") == ()
    assert parse_kobold_max_context(doc("kobold_max_context.json")) == 8192
    assert isinstance(parse_kobold_version(b'{"result":"Other"}'), ParseError)


def test_openwebui_models_keep_the_ollama_digest() -> None:
    models = parse_openwebui_models(doc("openwebui_models.json"), "w")
    assert not isinstance(models, ParseError)
    llama, gpt = models
    assert (llama.id, llama.owned_by, llama.family) == ("llama3:latest", "ollama", "llama")
    assert llama.digest is not None and llama.digest.startswith("fe938a13")
    assert (gpt.id, gpt.owned_by, gpt.digest) == ("gpt-4o", "openai", None)


def test_textgen() -> None:
    models = parse_textgen_model_info(doc("textgen_model_info.json"), "t")
    assert not isinstance(models, ParseError)
    assert [(m.id, m.loaded) for m in models] == [("Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf", True)]
    assert parse_textgen_model_info(doc("textgen_model_info_none.json"), "t") == ()


# --- Odd but valid, and invalid ----------------------------------------------------------------


def test_entries_without_ids_are_skipped_not_fatal() -> None:
    raw = b'{"object":"list","data":[{"id":5},{"object":"model"},null,"x",{"id":"ok"}]}'
    models = parse_openai_models(raw, "s")
    assert not isinstance(models, ParseError)
    assert [m.id for m in models] == ["ok"]


def test_wrongly_typed_fields_are_ignored() -> None:
    raw = b'{"models":[{"name":"m","size":"","digest":7,"details":[],"capabilities":"x"}]}'
    models = parse_ollama_tags(raw, "s")
    assert not isinstance(models, ParseError)
    (m,) = models
    assert (m.size_bytes, m.digest, m.family, m.capabilities) == (None, None, None, ())


def test_booleans_and_negatives_are_not_numbers() -> None:
    raw = b'{"data":[{"id":"a","max_model_len":true},{"id":"b","max_model_len":-1},{"id":"c","max_model_len":4096.0}]}'
    models = parse_openai_models(raw, "s")
    assert not isinstance(models, ParseError)
    assert [m.context_length for m in models] == [None, None, 4096]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"<html></html>",
        b"[]",
        b"null",
        b'{"data":{}}',
        b"[" * 5000,
        b'{"error":"x"}',
    ],
)
def test_wrong_top_level_is_a_parse_error(raw: bytes) -> None:
    result = parse_openai_models(raw, "s")
    assert isinstance(result, ParseError)
    assert result.parser == "openai_models" and result.message


_MODEL_PARSERS: list[Callable[[bytes, str], object]] = [
    parse_ollama_tags,
    parse_ollama_ps,
    parse_openai_models,
    parse_lmstudio_v0,
    parse_lmstudio_v1,
    parse_kobold_model,
    parse_openwebui_models,
    parse_textgen_model_info,
]
_VALUE_PARSERS: list[Callable[[bytes], object]] = [
    parse_ollama_version,
    parse_ollama_show,
    parse_llamacpp_props,
    parse_llamacpp_slots,
    parse_kobold_version,
    parse_kobold_max_context,
]

_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "model",
                    "data",
                    "models",
                    "meta",
                    "n_ctx",
                    "status",
                    "value",
                    "details",
                    "model_info",
                    "result",
                    "loaded_instances",
                    "config",
                    "context_length",
                    "expires_at",
                    "general.architecture",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
_bodies = st.one_of(st.binary(max_size=300), _json_values.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=400, deadline=None)
@given(raw=_bodies)
def test_no_parser_ever_raises(raw: bytes) -> None:
    for parser in _MODEL_PARSERS:
        result = parser(raw, "svc")
        assert isinstance(result, (tuple, ParseError))
        if isinstance(result, tuple):
            assert all(isinstance(m.id, str) and m.id for m in result)
            assert all(m.context_length is None or m.context_length > 0 for m in result)
    for value_parser in _VALUE_PARSERS:
        value_parser(raw)
