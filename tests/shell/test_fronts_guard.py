"""The HTTP fronts' guard through a running daemon, byte-level with httpx: tokens, DNS
rebinding (``Host``), foreign web pages (``Origin``), the audit of refusals, the instance
header on every answer, the token file, reloads, and /metrics."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from routerd.core.identify import ProbeResponse, identify
from routerd.shell import fronts
from routerd.shell.fronts.tokens import load_tokens


def auth(d: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {d.token}"}


@pytest.fixture
async def d(start_http_daemon: Any) -> Any:
    return await start_http_daemon(http='allowed_origins = ["http://localhost:3000"]')


@pytest.fixture
async def http(d: Any) -> Any:
    async with httpx.AsyncClient(base_url=d.base_url) as client:
        yield client


async def test_without_a_token_every_path_is_refused_and_audited(d: Any, http: Any) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", "/api/chat"), ("GET", "/metrics"),
                         ("GET", "/no/such/path")):  # fmt: skip
        r = await http.request(method, path)
        assert r.status_code == 401, path
        assert r.headers["x-routerd-instance"] == d.app.instance_id
        assert r.headers["www-authenticate"].startswith("Bearer")
    first = await http.get("/v1/models")
    assert first.json() == {"error": {"message": first.json()["error"]["message"],
                                      "type": "invalid_request_error", "param": None,
                                      "code": "missing_token"}}  # fmt: skip
    wrong = await http.get("/api/tags", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and wrong.json() == {"error": wrong.json()["error"]}
    assert "not a valid token" in wrong.json()["error"]
    kinds = [(k, det["refusal"]) for k, _, det in d.audit.security_events]
    # One record per kind every few seconds, however many requests are refused.
    assert kinds == [("http_refused", "missing_token"), ("http_refused", "bad_token")]
    assert d.audit.security_events[0][2]["path"] == "/v1/models"
    assert d.app.component_status()["http"]["refused"] == 6


async def test_a_dns_rebinding_page_is_refused_even_with_a_token(d: Any, http: Any) -> None:
    r = await http.get("/v1/models", headers={**auth(d), "Host": "attacker.example:11500"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_host"
    (_, _, details) = d.audit.security_events[-1]
    assert details["refusal"] == "bad_host" and details["host"] == "attacker.example:11500"
    ok = await http.get("/v1/models", headers={**auth(d), "Host": "localhost:11500"})
    assert ok.status_code == 200


async def test_foreign_origins_are_refused_allowed_ones_get_cors(d: Any, http: Any) -> None:
    evil = await http.post("/api/chat", headers={**auth(d), "Origin": "https://evil.example"},
                           content=b'{"model": "x", "messages": []}')  # fmt: skip
    assert evil.status_code == 403 and evil.json()["error"].startswith("Origin")
    ok = await http.get("/api/version", headers={**auth(d), "Origin": "http://localhost:3000"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    preflight = await http.options("/v1/chat/completions",
                                   headers={**auth(d), "Origin": "http://localhost:3000"})  # fmt: skip
    assert preflight.status_code == 204
    assert "authorization" in preflight.headers["access-control-allow-headers"]


async def test_every_answer_carries_the_instance_header_so_routerd_never_routes_to_itself(
    d: Any, http: Any
) -> None:
    answers = {}
    for path in ("/", "/api/version", "/api/tags", "/v1/models"):
        r = await http.get(path, headers=auth(d))
        answers[path] = ProbeResponse(r.status_code, dict(r.headers), r.content)
    missing = await http.get("/v1/nothing", headers=auth(d))
    assert missing.status_code == 404 and missing.headers["x-routerd-instance"]
    wrong_method = await http.get("/v1/chat/completions", headers=auth(d))
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    verdict = identify(answers, candidates=("ollama",), own_instance_id=d.app.instance_id)
    assert verdict.verdict == "routerd" and "this routerd" in verdict.reason


async def test_bad_bodies_are_answered_not_crashed_on(d: Any, http: Any) -> None:
    garbage = await http.post("/v1/chat/completions", headers=auth(d), content=b"{not json")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "bad_request"
    # Refused on its declared length, before a byte of it is read.
    host, port = d.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        head = (f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {d.token}"
                f"\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n")  # fmt: skip
        await stream.send_all(head.encode())
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 413")


async def test_metrics_are_served_in_the_prometheus_format(d: Any, http: Any) -> None:
    r = await http.get("/metrics", headers=auth(d))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert b"routerd_" in r.content


async def test_the_token_file_is_private_and_a_reload_reads_new_tokens(
    d: Any, http: Any, short_tmp: str
) -> None:
    path = f"{short_tmp}/tokens"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    extra = "rd-second-tool-token-0123456789"
    await trio.Path(path).write_text(await trio.Path(path).read_text() + extra + "\n")
    before = await http.get("/api/version", headers={"Authorization": f"Bearer {extra}"})
    front = fronts.front_of(d.app)
    front.on_reload(d.app.config, d.app.config)
    after = await http.get("/api/version", headers={"Authorization": f"Bearer {extra}"})
    assert (before.status_code, after.status_code) == (401, 200)
    assert d.app.component_status()["http"]["tokens"] == 2


async def test_disabled_fronts_answer_404(start_http_daemon: Any) -> None:
    d = await start_http_daemon(http="openai = false\nmetrics = false\nrequire_token = false")
    async with httpx.AsyncClient(base_url=d.base_url) as http:
        openai_side = await http.get("/v1/models")
        metrics = await http.get("/metrics")
        ollama_side = await http.get("/api/tags")
    assert (openai_side.status_code, metrics.status_code) == (404, 404)
    assert ollama_side.status_code == 200  # and no token needed when not required


async def test_a_port_in_use_leaves_the_daemon_running_and_says_why(
    start_http_daemon: Any,
) -> None:
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        d = await start_http_daemon(listen=f'["127.0.0.1:{port}"]')
        status = d.app.component_status()["http"]
    finally:
        taken.close()
    assert "not serving" in status["error"] and f"127.0.0.1:{port}" in status["error"]
    assert status["listening"] == [] and d.base_url == ""


def test_a_token_file_others_can_read_is_flagged(short_tmp: str) -> None:
    fresh = load_tokens(Path(short_tmp) / "new" / "tokens", create=True)
    assert fresh.created and not fresh.exposed and len(fresh.tokens) == 1
    assert len(fresh.tokens[0]) >= 40
    assert stat.S_IMODE(os.stat(f"{short_tmp}/new").st_mode) == 0o700
    shared = Path(short_tmp) / "shared"
    shared.write_text("# mine\nrd-some-shared-token-0123456789\n")
    shared.chmod(0o644)
    read = load_tokens(shared, create=True)
    assert read.exposed and not read.created and read.tokens == ("rd-some-shared-token-0123456789",)
