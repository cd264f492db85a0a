"""The fakes and routerd's core agree: identify() names each fake's kind, assemble() reads it.

Each fake is probed the way the shell will: the GETs of ``identity_plan(candidates)``, then
the kind's per-model requests; the answers go to the pure core functions unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from fakes import FakeServer, Script, start_fake

from routerd.core.discovery import ServiceReport, assemble, per_model_requests, show_key
from routerd.core.identify import Identification, ProbeResponse, identify
from routerd.core.services import IDENTIFIED_KINDS, ServiceKind, identity_plan, spec_for

PORT_8080: tuple[ServiceKind, ...] = ("openwebui", "localai", "llamacpp")
PORT_8000: tuple[ServiceKind, ...] = ("vllm", "llama_cpp_python")


async def probe(
    fake: FakeServer, candidates: tuple[ServiceKind, ...], key: str | None = None
) -> dict[str, ProbeResponse]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    out: dict[str, ProbeResponse] = {}
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=2, headers=headers) as client:
        for step in identity_plan(candidates):
            r = await client.request(step.method, step.path)
            out[step.path] = ProbeResponse(r.status_code, dict(r.headers), r.content)
    return out


async def discover(
    fake: FakeServer, kind: ServiceKind, key: str | None = None
) -> tuple[Identification, ServiceReport]:
    answers = await probe(fake, (kind,), key)
    ident = identify(answers, candidates=(kind,))
    first = assemble(kind, "svc", answers)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=2, headers=headers) as client:
        for req in per_model_requests(kind, first.models):
            r = await client.request(req.method, req.path, content=req.body)
            answers[req.key] = ProbeResponse(r.status_code, dict(r.headers), r.content)
    return ident, assemble(kind, "svc", answers)


CASES: list[tuple[str, tuple[ServiceKind, ...], str | None]] = [
    ("ollama", ("ollama",), "ollama"),
    ("llamacpp", PORT_8080, "llamacpp"),
    ("llamacpp", ("llamacpp",), "llamacpp"),
    ("localai", PORT_8080, "localai"),
    ("openwebui", PORT_8080, "openwebui"),
    ("vllm", PORT_8000, "vllm"),
    ("llama_cpp_python", PORT_8000, "llama_cpp_python"),
    ("lmstudio", ("lmstudio",), "lmstudio"),
    ("jan", ("jan",), "jan"),
    ("koboldcpp", ("koboldcpp",), "koboldcpp"),
    ("gpt4all", ("gpt4all",), "gpt4all"),
    ("textgen", ("textgen",), "textgen"),
    ("openai_compat", ("custom",), "openai_compat"),
    ("foreign", PORT_8080, None),
    ("foreign", PORT_8000, None),
]


@pytest.mark.parametrize(("kind", "candidates", "expected"), CASES)
async def test_identify_names_each_fake(
    nursery: trio.Nursery, kind: str, candidates: tuple[ServiceKind, ...], expected: str | None
) -> None:
    fake = await start_fake(nursery, kind)
    ident = identify(await probe(fake, candidates, fake.api_key), candidates=candidates)
    if expected is None:
        assert (ident.verdict, ident.kind) == ("foreign", None), ident
    else:
        assert (ident.verdict, ident.kind) == ("ready", expected), ident


# Jan and GPT4All show no marker of their own: probed with every plan they are "some
# OpenAI-compatible server", which is all anyone can tell.
ALL_PATHS_EXPECTED = {"jan": "openai_compat", "gpt4all": "openai_compat"}


@pytest.mark.parametrize("kind", IDENTIFIED_KINDS)
async def test_identify_with_every_probe_path(nursery: trio.Nursery, kind: ServiceKind) -> None:
    fake = await start_fake(nursery, kind)
    answers = await probe(fake, IDENTIFIED_KINDS, fake.api_key)
    ident = identify(answers, candidates=IDENTIFIED_KINDS)
    assert (ident.verdict, ident.kind) == ("ready", ALL_PATHS_EXPECTED.get(kind, kind)), ident


async def test_routerd_is_refused_as_a_loop(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "routerd", instance_id="other-1")
    ident = identify(await probe(fake, ("custom",)), candidates=("custom",), own_instance_id="me")
    assert (ident.verdict, ident.instance_id, ident.is_self) == ("routerd", "other-1", False)
    mine = identify(
        await probe(fake, ("custom",)), candidates=("custom",), own_instance_id="other-1"
    )
    assert mine.is_self


async def test_loading_llama_server_is_loading_then_ready(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp", state="loading")
    ident = identify(await probe(fake, PORT_8080), candidates=PORT_8080)
    assert (ident.verdict, ident.kind) == ("loading", "llamacpp")
    fake.state = "ready"
    assert identify(await probe(fake, PORT_8080), candidates=PORT_8080).verdict == "ready"


@pytest.mark.parametrize(
    ("kind", "candidates"),
    [("openwebui", PORT_8080), ("vllm", PORT_8000), ("jan", ("jan",))],
)
async def test_missing_key_is_unauthorized_not_down(
    nursery: trio.Nursery, kind: str, candidates: tuple[ServiceKind, ...]
) -> None:
    fake = await start_fake(nursery, kind)
    fake.state = "unauthorized"
    ident = identify(await probe(fake, candidates), candidates=candidates)
    assert (ident.verdict, ident.kind) == ("unauthorized", kind), ident


async def test_llama_server_key_leaves_health_and_models_public(nursery: trio.Nursery) -> None:
    # With --api-key, llama-server still answers /health and /v1/models: identify sees a
    # ready server; only /props, /slots and generation answer 401.
    fake = await start_fake(nursery, "llamacpp", api_key="secret")
    answers = await probe(fake, PORT_8080)
    assert {p: answers[p].status for p in ("/health", "/v1/models", "/props", "/slots")} == {
        "/health": 200,
        "/v1/models": 200,
        "/props": 401,
        "/slots": 401,
    }
    assert identify(answers, candidates=PORT_8080).verdict == "ready"
    assert identify(await probe(fake, PORT_8080, "secret"), candidates=PORT_8080).verdict == "ready"


async def test_server_error_state_is_an_error(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp", state="error")
    ident = identify(await probe(fake, ("llamacpp",)), candidates=("llamacpp",))
    assert ident.verdict == "error"


# --- assemble() reads what each fake says about its models ---------------------------------


def by_id(report: ServiceReport) -> dict[str, Any]:
    assert not report.errors, report.errors
    return {m.id: m for m in report.models}


async def test_ollama_report(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    ident, report = await discover(fake, "ollama")
    assert (ident.verdict, ident.version, report.version) == ("ready", "0.12.6", "0.12.6")
    models = by_id(report)
    llama, qwen = models["llama3.2:latest"], models["qwen2.5-coder:7b"]
    assert (llama.loaded, llama.context_length, llama.max_context_length) == (True, 4096, 131072)
    assert "tools" in llama.capabilities and llama.family == "llama"
    assert (qwen.loaded, qwen.max_context_length) == (False, 32768)
    assert report.identity and report.identity.startswith("ollama:")
    assert fake.last("/api/show").json == {"model": "qwen2.5-coder:7b"}
    assert show_key("llama3.2:latest") != show_key("qwen2.5-coder:7b")


async def test_llama_server_report_and_busy_slots(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp", slots=2)
    _, report = await discover(fake, "llamacpp")
    (model,) = report.models
    assert (model.context_length, model.max_context_length, model.loaded) == (2048, 8192, True)
    assert (report.total_slots, report.busy_slots, report.version) == (2, 0, "b1-0c1e570")
    assert report.identity and report.identity.startswith("llamacpp:<__media_")
    fake.script = Script(hang_before_first_token=True)
    async with httpx.AsyncClient(base_url=fake.base_url) as client, trio.open_nursery() as inner:
        for _ in range(2):
            inner.start_soon(
                _swallow, client, {"messages": [{"role": "user", "content": "x"}], "stream": True}
            )
        await fake.wait_until(lambda: fake.active == 2)
        _, busy = await discover(fake, "llamacpp")
        assert (busy.busy_slots, busy.all_slots_busy) == (2, True)
        inner.cancel_scope.cancel()
    await fake.wait_until(lambda: fake.active == 0)
    assert fake.disconnects == 2


async def _swallow(client: httpx.AsyncClient, body: Any) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        await r.aread()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("vllm", {"Qwen/Qwen2.5-Coder-7B-Instruct": (32768, None)}),
        (
            "lmstudio",
            {
                "qwen2.5-coder-7b-instruct": (4096, True),
                "meta-llama-3.1-8b-instruct": (None, False),
            },
        ),
        ("koboldcpp", {"koboldcpp/Qwen2.5-Coder-7B-Instruct-Q4_K_M": (8192, True)}),
        ("textgen", {"Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf": (None, True)}),
        ("llama_cpp_python", {"/models/SmolLM2-135M-Instruct.Q4_1.gguf": (None, None)}),
        ("localai", {"qwen2.5-coder-7b": (None, None)}),
        ("gpt4all", {"Llama 3 8B Instruct": (None, None)}),
        ("jan", {"jan-v1-4b": (None, None)}),
        ("openwebui", {"llama3.2:latest": (None, None)}),
    ],
)
async def test_reports_of_other_kinds(
    nursery: trio.Nursery, kind: ServiceKind, expected: dict[str, tuple[Any, Any]]
) -> None:
    fake = await start_fake(nursery, kind)
    ident, report = await discover(fake, kind, fake.api_key)
    assert ident.verdict == "ready" and ident.kind == kind
    got = {m.id: (m.context_length, m.loaded) for m in by_id(report).values()}
    if kind == "vllm":  # a single-model server: what it lists is loaded
        expected = {k: (ctx, True) for k, (ctx, _) in expected.items()}
    assert got == expected


async def test_loading_models_show_as_not_loaded(nursery: trio.Nursery) -> None:
    for kind in ("ollama", "lmstudio", "koboldcpp", "textgen"):
        fake = await start_fake(nursery, kind, state="loading")
        _, report = await discover(fake, kind)
        assert not any(m.loaded for m in report.models), (kind, report.models)


def test_every_service_kind_has_a_fake() -> None:
    from fakes import KIND_NAMES

    assert set(IDENTIFIED_KINDS) <= set(KIND_NAMES)
    assert {"foreign", "routerd"} <= set(KIND_NAMES)
    for kind in IDENTIFIED_KINDS:
        assert spec_for(kind).kind == kind
