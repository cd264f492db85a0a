"""assemble(), context resolution, model diffs, and grouping of one server seen twice."""

from __future__ import annotations

import json
import pathlib

import pytest

from routerd.core.backends import BackendFingerprint, fingerprint, group_backends
from routerd.core.discovery import (
    ServiceReport,
    assemble,
    diff_models,
    infer_context_from_name,
    per_model_requests,
    probe_input,
    resolve_context,
    show_key,
)
from routerd.core.identify import Identification, ProbeResponse
from routerd.core.model_parsers import DiscoveredModel

DATA = pathlib.Path(__file__).parent.parent / "data" / "servers"
DOC = DATA / "documented"


def ok(raw: bytes) -> ProbeResponse:
    return ProbeResponse(200, {"Content-Type": "application/json"}, raw)


def doc(name: str) -> ProbeResponse:
    return ok((DOC / name).read_bytes())


def real(*parts: str) -> ProbeResponse:
    return ok(DATA.joinpath(*parts).read_bytes())


# --- assemble ------------------------------------------------------------------------------------


def _ollama_answers() -> dict[str, ProbeResponse]:
    return {
        "/api/version": doc("ollama_version.json"),
        "/api/tags": doc("ollama_tags.json"),
        "/api/ps": doc("ollama_ps.json"),
        show_key("llama3:latest"): doc("ollama_show.json"),
    }


def test_ollama_report_merges_tags_ps_and_show() -> None:
    report = assemble("ollama", "ollama", _ollama_answers())
    assert report.version == "0.5.1" and report.errors == ()
    codellama, llama3 = report.models
    assert (codellama.id, codellama.loaded, codellama.context_length) == (
        "codellama:13b",
        False,
        None,
    )
    assert llama3.loaded is True
    assert (llama3.context_length, llama3.context_source) == (4096, "server")  # runtime, /api/ps
    assert llama3.max_context_length == 8192  # model_info["llama.context_length"]
    assert llama3.capabilities == ("completion", "tools")
    assert (llama3.size_vram, llama3.size_bytes) == (4137025024, 5137025024)
    assert report.identity is not None and report.identity.startswith("ollama:")


def test_ollama_per_model_requests() -> None:
    report = assemble("ollama", "o", {"/api/tags": doc("ollama_tags.json")})
    reqs = per_model_requests("ollama", report.models)
    assert [(r.key, r.method, r.path) for r in reqs] == [
        ("/api/show#codellama:13b", "POST", "/api/show"),
        ("/api/show#llama3:latest", "POST", "/api/show"),
    ]
    assert json.loads(reqs[0].body) == {"model": "codellama:13b"}
    assert per_model_requests("vllm", report.models) == ()


def test_llamacpp_report_from_captures() -> None:
    answers = {
        "/health": real("llama-server", "health.body"),
        "/props": real("llama-server", "props.body"),
        "/v1/models": real("llama-server", "np2", "models.body"),
        "/slots": real("llama-server", "np2", "slots_busy.body"),
    }
    report = assemble("llamacpp", "lcpp", answers)
    (m,) = report.models
    assert (m.id, m.context_length, m.max_context_length) == ("smollm2-135m", 1024, 8192)
    assert (report.total_slots, report.busy_slots, report.all_slots_busy) == (2, 2, True)
    assert report.version == "b1-0c1e570"
    assert report.identity == "llamacpp:<__media_73VeNVhph2Mz7zUwXPmrAhfq9my5P1gL__>"


def test_llamacpp_context_from_props_when_models_lack_n_ctx() -> None:
    old_style = b'{"object":"list","data":[{"id":"m.gguf","owned_by":"llamacpp","meta":{"n_ctx_train":8192}}]}'
    report = assemble(
        "llamacpp", "l", {"/v1/models": ok(old_style), "/props": real("llama-server", "props.body")}
    )
    (m,) = report.models
    assert (m.context_length, m.context_source, m.max_context_length) == (2048, "server", 8192)


def test_lmstudio_prefers_v1_then_v0_then_openai() -> None:
    both = {
        "/api/v1/models": doc("lmstudio_v1_models.json"),
        "/api/v0/models": doc("lmstudio_v0_models.json"),
    }
    assert assemble("lmstudio", "l", both).models[0].id == "gemma-3-270m-it-qat"
    v0 = {
        "/api/v1/models": ProbeResponse(404, {}, b"{}"),
        "/api/v0/models": doc("lmstudio_v0_models.json"),
    }
    assert assemble("lmstudio", "l", v0).models[0].id == "qwen2-vl-7b-instruct"
    plain = {"/v1/models": doc("lmstudio_openai_models.json")}
    assert [m.id for m in assemble("lmstudio", "l", plain).models] == ["meta-llama-3.1-8b-instruct"]


def test_kobold_report() -> None:
    answers = {
        "/api/extra/version": doc("kobold_version.json"),
        "/api/v1/model": doc("kobold_model.json"),
        "/api/extra/true_max_context_length": doc("kobold_max_context.json"),
    }
    report = assemble("koboldcpp", "k", answers)
    (m,) = report.models
    assert (m.context_length, m.context_source, report.version) == (8192, "server", "1.82.4")


def test_other_kinds() -> None:
    assert [
        m.id
        for m in assemble("openwebui", "w", {"/api/models": doc("openwebui_models.json")}).models
    ] == ["llama3:latest", "gpt-4o"]
    assert assemble(
        "textgen", "t", {"/v1/internal/model/info": doc("textgen_model_info.json")}
    ).models
    assert (
        assemble("vllm", "v", {"/v1/models": doc("vllm_models.json")}).models[0].context_length
        == 32768
    )


def test_bad_bodies_become_errors_and_the_rest_stands() -> None:
    answers = _ollama_answers()
    answers["/api/ps"] = ok(b"<html>oops</html>")
    report = assemble("ollama", "o", answers)
    assert [e.parser for e in report.errors] == ["ollama_ps"]
    assert len(report.models) == 2
    assert report.models[1].loaded is None  # ps unknown: nothing claimed


def test_non_2xx_answers_are_not_read() -> None:
    report = assemble("jan", "j", {"/v1/models": ProbeResponse(401, {}, b'{"data":[{"id":"x"}]}')})
    assert report == ServiceReport("jan")


# --- probe_input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        ("ready", "probe_ok"),
        ("loading", "probe_loading"),
        ("error", "probe_error"),
        ("unauthorized", "probe_unauthorized"),
        ("foreign", "probe_foreign"),
        ("routerd", "probe_routerd"),
        ("absent", "probe_refused"),
    ],
)
def test_probe_input(verdict: str, expected: str) -> None:
    assert probe_input(Identification(verdict)) == expected  # type: ignore[arg-type]


def test_probe_input_busy_slots() -> None:
    ready = Identification("ready", "llamacpp")
    assert (
        probe_input(ready, ServiceReport("llamacpp", total_slots=2, busy_slots=2)) == "probe_busy"
    )
    assert probe_input(ready, ServiceReport("llamacpp", total_slots=2, busy_slots=1)) == "probe_ok"
    assert probe_input(ready, ServiceReport("ollama")) == "probe_ok"


# --- context -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("yarn-mistral-7b-128k", 131072),
        ("qwen2.5-coder:32k", 32768),
        ("Model_16K.gguf", 16384),
        ("llama3:8b", None),
        ("phi-3-mini-4k-instruct", 4096),
        ("gpt-4o", None),
        ("v1.5k", None),
        ("x-99999k", None),
        ("deepseek-coder-6.7b", None),
    ],
)
def test_infer_context_from_name(name: str, expected: int | None) -> None:
    assert infer_context_from_name(name) == expected


def test_resolve_context_prefers_the_server() -> None:
    runtime = DiscoveredModel("m-128k", "s", context_length=4096, max_context_length=8192)
    assert resolve_context(runtime).context_length == 4096
    assert resolve_context(runtime).context_source == "server"
    maximum = DiscoveredModel("m-128k", "s", max_context_length=8192)
    assert (resolve_context(maximum).context_length, resolve_context(maximum).context_source) == (
        8192,
        "server",
    )
    named = DiscoveredModel("m-128k", "s")
    assert (resolve_context(named).context_length, resolve_context(named).context_source) == (
        131072,
        "name",
    )
    plain = DiscoveredModel("plain", "s")
    assert resolve_context(plain) == plain
    assert resolve_context(plain, default=8192).context_source == "default"
    assert resolve_context(named, infer=None, default=4096).context_length == 4096


# --- diffs ---------------------------------------------------------------------------------------


def test_diff_models_ignores_keep_alive_ticks() -> None:
    a = DiscoveredModel("a", "s", loaded=True, expires_at=100.0)
    b = DiscoveredModel("b", "s")
    assert diff_models([a, b], [DiscoveredModel("a", "s", loaded=True, expires_at=200.0), b]).empty
    diff = diff_models([a, b], [DiscoveredModel("a", "s", loaded=False), DiscoveredModel("c", "s")])
    assert (diff.added, diff.removed, diff.changed) == (("c",), ("b",), ("a",))


# --- grouping ------------------------------------------------------------------------------------


def test_one_server_under_two_urls_is_one_backend() -> None:
    report = ServiceReport("vllm")
    prints = [
        fingerprint("vllm", "http://localhost:8000/", report),
        fingerprint("gpu", "http://127.0.0.1:8000", report),
        fingerprint("other", "http://127.0.0.1:8001", report),
    ]
    assert group_backends(prints) == {"vllm": "gpu", "gpu": "gpu", "other": "other"}


def test_llamacpp_same_process_by_media_marker() -> None:
    answers = {
        "/props": real("llama-server", "props.body"),
        "/v1/models": real("llama-server", "models.body"),
    }
    report = assemble("llamacpp", "x", answers)
    prints = [
        fingerprint("llamacpp", "http://127.0.0.1:8080", report),
        fingerprint("box", "http://192.168.1.10:8080", report),
    ]
    assert group_backends(prints) == {"llamacpp": "box", "box": "box"}


def test_open_webui_in_front_of_ollama_is_one_backend() -> None:
    ollama = assemble("ollama", "ollama", {"/api/tags": doc("ollama_tags.json")})
    webui = assemble("openwebui", "webui", {"/api/models": doc("openwebui_models.json")})
    prints = [
        fingerprint("ollama", "http://127.0.0.1:11434", ollama),
        fingerprint("webui", "http://127.0.0.1:3000", webui),
    ]
    assert prints[1].front and prints[1].digests <= prints[0].digests
    assert group_backends(prints) == {"ollama": "ollama", "webui": "ollama"}


def test_front_over_two_backends_is_not_merged() -> None:
    def fp(name: str, digests: set[str], front: bool = False) -> BackendFingerprint:
        return BackendFingerprint(
            name,
            "openwebui" if front else "ollama",
            f"http://h/{name}",
            digests=frozenset(digests),
            front=front,
        )

    prints = [fp("a", {"1", "2"}), fp("b", {"1", "2", "3"}), fp("w", {"1"}, front=True)]
    assert group_backends(prints)["w"] == "w"  # both hold digest 1: ambiguous
    prints = [fp("a", {"1"}), fp("b", {"2"}), fp("w", {"1", "2"}, front=True)]
    assert group_backends(prints)["w"] == "w"  # it spans both


def test_grouping_does_not_depend_on_order() -> None:
    prints = [
        BackendFingerprint("c", "llamacpp", "u1", identity="p"),
        BackendFingerprint("a", "llamacpp", "u2", identity="p"),
        BackendFingerprint("b", "llamacpp", "u1"),
        BackendFingerprint("d", "vllm", "u3"),
    ]
    expected = {"a": "a", "b": "a", "c": "a", "d": "d"}
    assert group_backends(prints) == expected
    assert group_backends(list(reversed(prints))) == expected
