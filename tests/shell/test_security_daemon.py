"""The security feature in a running daemon: peers, capabilities, audit methods, events.

"Another uid" is real: a forked child drops to ``nobody`` (the tests run as root) and connects
with the standard library. Each refusal is checked for the security event it leaves.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from routerd.core.config import (
    ClientRule,
    Config,
    DaemonConfig,
    ModelChecksum,
    SecurityConfig,
    default_config,
)
from routerd.core.egress import policy_from_config
from routerd.core.errors import BadConfig
from routerd.shell import security
from routerd.shell.app import App
from routerd.shell.checksums import model_blocked
from routerd.shell.http import EgressRefused, make_http_client
from routerd.shell.methods import build_registry
from routerd_client import framing

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")

Start = Callable[..., Awaitable[App]]


def make_config(tmp: str, **sec: Any) -> Config:
    return msgspec.structs.replace(
        default_config(),
        daemon=DaemonConfig(socket=f"{tmp}/d.sock", state_dir=f"{tmp}/state"),
        security=SecurityConfig(**sec),
    )


@pytest.fixture
def start(nursery: trio.Nursery, short_tmp: str) -> Start:
    async def run(config_option: Path | None = None, **sec: Any) -> App:
        app = App(
            make_config(short_tmp, **sec), env={}, registry=build_registry(),
            config_option=config_option,
        )  # fmt: skip
        security.install(app)
        await nursery.start(functools.partial(app.run, handle_signals=False))
        return app

    return run


def frame(rid: int, method: str, params: Any = None) -> bytes:
    msg: dict[str, Any] = {"type": "request", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return framing.frame(msgspec.msgpack.encode(msg))


def _child(uid: int, path: str, payload: bytes, w: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        # A refused peer may be answered and closed before it finishes sending; what the
        # daemon said is still there to read.
        pass
    data = b""
    while True:  # until EOF, or one whole frame
        if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    os.write(w, data)


def connect_as(uid: int, path: str, payload: bytes) -> list[dict[str, Any]]:
    """Connect to ``path`` as ``uid`` in a forked child; the frames it read before EOF."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            _child(uid, path, payload, w)
        except BaseException as exc:
            os.write(w, b"ERR " + repr(exc).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert not out.startswith(b"ERR "), out
    parser = framing.FrameParser(1 << 20)
    parser.feed(out)
    return [msgspec.msgpack.decode(f) for f in parser.frames()]


def open_to_everyone(app: App) -> str:
    """Let any uid reach the socket (as a careless SocketMode=0666 would)."""
    assert app.socket_path is not None
    os.chmod(os.path.dirname(app.socket_path), 0o755)
    os.chmod(app.socket_path, 0o666)
    return app.socket_path


async def audit_records(app: App) -> list[dict[str, Any]]:
    lines = await app.audit.tail(10_000)  # type: ignore[attr-defined]
    return [json.loads(line) for line in lines]


async def events_of(app: App, kind: str) -> list[dict[str, Any]]:
    return [r for r in await audit_records(app) if r["event_type"] == f"security:{kind}"]


Connect = Callable[[App], Awaitable[Any]]  # conftest's ``connect``: a raw Wire


# --- peers ------------------------------------------------------------------------------------


async def test_peer_with_another_uid_is_refused(connect: Connect, start: Start) -> None:
    app = await start()
    path = open_to_everyone(app)
    frames = await trio.to_thread.run_sync(connect_as, NOBODY, path, frame(1, "ping"))
    assert len(frames) == 1
    (err,) = frames
    assert (err["type"], err["id"], err["code"]) == ("error", None, "forbidden")
    assert "uid 65534" in err["message"]
    (event,) = await events_of(app, "refused_peer")
    assert event["uid"] == NOBODY and event["pid"] > 0
    # The owner (root here) is served as usual.
    assert (await (await connect(app)).call(1, "ping"))["type"] == "result"


async def test_allowed_uid_is_served_but_not_privileged_methods(start: Start) -> None:
    app = await start(allowed_uids=[NOBODY])
    path = open_to_everyone(app)
    (ok,) = await trio.to_thread.run_sync(connect_as, NOBODY, path, frame(1, "ping"))
    assert ok["type"] == "result"
    (err,) = await trio.to_thread.run_sync(
        connect_as, NOBODY, path, frame(2, "audit.verify", {"text": "x"})
    )
    assert (err["type"], err["id"], err["code"]) == ("error", 2, "forbidden")
    (event,) = await events_of(app, "forbidden_method")
    assert event["uid"] == NOBODY and event["details"]["method"] == "audit.verify"
    assert await events_of(app, "refused_peer") == []


async def test_read_only_client(connect: Connect, start: Start) -> None:
    app = await start(clients=[ClientRule(uid=0, methods=["status", "audit.*"])])
    w = await connect(app)
    assert (await w.call(1, "status"))["type"] == "result"
    assert (await w.call(2, "ping"))["type"] == "result"
    err = await w.call(3, "config.reload")
    assert err["code"] == "forbidden" and "uid 0" in err["message"]
    assert (await w.call(4, "audit.verify_chain"))["result"]["ok"] is True
    assert len(await events_of(app, "forbidden_method")) == 1


# --- audit methods ----------------------------------------------------------------------------


async def test_audit_methods_over_the_socket(connect: Connect, start: Start) -> None:
    from routerd.core.audit import AuditEvent

    app = await start()
    secret = "summarize /srv/payroll/salaries.csv for the board"
    await app.audit.record(AuditEvent(event_type="query", query=secret, model="m", uid=0))
    w = await connect(app)
    await w.request(1, "audit.tail", {"lines": 2, "follow": True})
    first = [await w.recv(), await w.recv()]
    assert [json.loads(m["data"]["line"])["event_type"] for m in first][-1] == "query"
    app.audit.security("probe", "a new line while following")
    follow = await w.recv()
    assert json.loads(follow["data"]["line"])["event_type"] == "security:probe"
    w2 = await connect(app)
    found = (await w2.call(2, "audit.verify", {"text": secret}))["result"]
    assert [m["event_type"] for m in found["matches"]] == ["query"]
    none = (await w2.call(3, "audit.verify", {"text": secret + "."}))["result"]
    assert none["matches"] == []
    chain = (await w2.call(4, "audit.verify_chain"))["result"]
    assert chain["ok"] and chain["anchored"] and chain["files"] == ["audit.log"]
    # The audit log holds no plaintext of the query.
    state = Path(app.config.daemon.state_dir or "")
    assert secret.encode() not in (state / "audit.log").read_bytes()


async def test_tampering_is_reported_by_verify_chain(connect: Connect, start: Start) -> None:
    app = await start()
    for i in range(5):
        app.audit.security("probe", f"line {i}")
    await app.audit.flush()  # type: ignore[attr-defined]
    log_path = Path(app.config.daemon.state_dir or "") / "audit.log"
    lines = log_path.read_bytes().splitlines(keepends=True)
    del lines[3]
    log_path.write_bytes(b"".join(lines))
    result = (await (await connect(app)).call(1, "audit.verify_chain"))["result"]
    assert not result["ok"] and "missing" in result["problems"][0]["problem"]


# --- events from elsewhere --------------------------------------------------------------------


async def test_rejected_reload_is_a_security_event(start: Start, short_tmp: str) -> None:
    conf = Path(short_tmp) / "routerd.toml"
    conf.write_text(f'[daemon]\nsocket = "{short_tmp}/d.sock"\nstate_dir = "{short_tmp}/state"\n')
    app = await start(config_option=conf)
    conf.write_text(
        conf.read_text()
        + '[[services.custom_endpoints]]\nname = "x"\nendpoint = "http://203.0.113.7:80"\n'
    )
    with pytest.raises(BadConfig, match="outside the egress allowlist"):
        await app.reload()
    (event,) = await events_of(app, "config_rejected")
    assert "203.0.113.7" in event["error"]
    assert event["details"]["path"] == "$.services.custom_endpoints[0].endpoint"


async def test_refused_endpoint_is_a_security_event(start: Start) -> None:
    app = await start()
    async with make_http_client(
        lambda: policy_from_config(app.config.security),
        timeout=2, on_refused=security.egress_reporter(app),
    ) as client:  # fmt: skip
        with pytest.raises(EgressRefused):
            await client.get("http://198.51.100.1:11434/api/tags")
    (event,) = await events_of(app, "refused_endpoint")
    assert event["details"]["url"] == "http://198.51.100.1:11434/api/tags"


# --- checksums and doctor ---------------------------------------------------------------------


async def test_verify_blocks_models_that_fail(
    connect: Connect, start: Start, short_tmp: str
) -> None:
    store = Path(short_tmp) / "ollama"
    (store / "blobs").mkdir(parents=True)
    good, bad = b"good weights", b"tampered weights"
    good_d = hashlib.sha256(good).hexdigest()
    bad_d = hashlib.sha256(b"original weights").hexdigest()
    (store / "blobs" / f"sha256-{good_d}").write_bytes(good)
    (store / "blobs" / f"sha256-{bad_d}").write_bytes(bad)
    mdir = store / "manifests" / "registry.ollama.ai" / "library"
    for model, digest in (("fine", good_d), ("broken", bad_d)):
        (mdir / model).mkdir(parents=True)
        (mdir / model / "latest").write_text(
            json.dumps({"config": {"digest": f"sha256:{good_d}"}, "layers": [
                {"digest": f"sha256:{digest}"}]})
        )  # fmt: skip
    gguf = Path(short_tmp) / "m.gguf"
    gguf.write_bytes(b"GGUF...")
    app = await start(
        ollama_models=str(store), verify_checksums=True,
        model_checksums=[ModelChecksum(path=str(gguf), sha256="0" * 64, model="local-gguf")],
    )  # fmt: skip
    result = (await (await connect(app)).call(1, "verify"))["result"]
    status = {Path(f["path"]).name: f["status"] for f in result["files"]}
    assert status == {f"sha256-{good_d}": "ok", f"sha256-{bad_d}": "mismatch", "m.gguf": "mismatch"}
    assert not result["ok"]
    assert set(result["blocked_models"]) >= {"broken:latest", "broken", "local-gguf"}
    assert model_blocked(app, "broken:latest") is not None
    assert model_blocked(app, "fine:latest") is None
    assert len(await events_of(app, "checksum_mismatch")) >= 2


async def test_doctor_reports_the_checklist(connect: Connect, start: Start) -> None:
    app = await start()
    checks = (await (await connect(app)).call(1, "doctor"))["result"]["checks"]
    by_name = {c["name"]: c["status"] for c in checks}
    assert by_name["socket mode and owner"] == "pass"
    assert by_name["allowlist is tight"] == "pass"
    assert by_name["audit is on"] == "pass"
    assert by_name["Serena's usage reporting is off"] == "pass"


async def test_audit_off_still_logs_security_events(
    connect: Connect, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start(audit_enabled=False)
    err = await (await connect(app)).call(1, "audit.tail", {"lines": 1})
    assert err["code"] == "unavailable"
    app.audit.security("probe", "journal only")
    assert any("security event probe: journal only" in r.getMessage() for r in caplog.records)


async def test_a_reload_changes_who_is_admitted(start: Start, short_tmp: str) -> None:
    conf = Path(short_tmp) / "routerd.toml"
    base = f'[daemon]\nsocket = "{short_tmp}/d.sock"\nstate_dir = "{short_tmp}/state"\n'
    conf.write_text(base)
    app = await start(config_option=conf)
    path = open_to_everyone(app)
    (err,) = await trio.to_thread.run_sync(connect_as, NOBODY, path, frame(1, "ping"))
    assert err["code"] == "forbidden"
    conf.write_text(base + f"[security]\nallowed_uids = [{NOBODY}]\n")
    await app.reload()
    (ok,) = await trio.to_thread.run_sync(connect_as, NOBODY, path, frame(1, "ping"))
    assert ok["type"] == "result"
