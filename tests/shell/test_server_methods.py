"""The daemon's own methods (hello, ping, status, config.reload) and handler error mapping."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from routerd import __version__
from routerd.core.errors import BadRequest, RouterdError, error_for_code
from routerd.shell.dispatch import Registry, RequestContext
from routerd.shell.requests import INTERNAL_MESSAGE
from routerd_client.protocol import ERROR_CODES, PROTOCOL_VERSION, EmptyParams


async def test_hello_reports_the_daemon_and_its_limits(start_daemon, connect):
    app = await start_daemon(max_frame_size=4096)
    wire = await connect(app)
    reply = await wire.call(1, "hello", {"protocol": [1, 0], "client": {"name": "t"}})
    assert reply["type"] == "result"
    result = reply["result"]
    assert result["daemon"] == "routerd"
    assert result["version"] == __version__
    assert result["protocol"] == list(PROTOCOL_VERSION)
    assert result["instance_id"] == app.instance_id
    assert len(result["instance_id"]) == 32 and int(result["instance_id"], 16) >= 0
    assert {"hello", "ping", "status", "config.reload", "test.sleep"} <= set(result["capabilities"])
    assert result["max_frame_size"] == 4096


async def test_hello_with_another_major_is_refused_but_the_connection_stays(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    reply = await wire.call(1, "hello", {"protocol": [2, 0]})
    assert reply["type"] == "error" and reply["id"] == 1
    assert reply["code"] == "unsupported_version"
    assert "2.0" in reply["message"] and "1.0" in reply["message"]
    assert (await wire.call(2, "ping"))["result"] == {}


async def test_hello_remembers_client_and_agent_and_the_last_one_counts(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    await wire.call(1, "hello", {"client": {"name": "nvim", "version": "1"},
                                 "agent": {"name": "aider", "type": "aider"}})
    await wire.call(2, "hello", {"client": {"name": "routerctl", "version": "2"}})
    who = (await wire.call(3, "test.whoami"))["result"]
    assert who["client"] == {"name": "routerctl", "version": "2"}
    assert who["agent"] == {}  # defaults are omitted: name and type "unknown"
    other = await connect(app)
    assert (await other.call(1, "test.whoami"))["result"]["client"] is None


async def test_ping_returns_an_empty_map(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    assert await wire.call(7, "ping") == {"type": "result", "id": 7, "result": {}}


async def test_status_reports_counters_and_components(start_daemon, connect, short_tmp):
    app = await start_daemon()
    calls = []

    def serena() -> dict[str, object]:
        calls.append(1)
        return {"state": "warming"}

    def broken() -> dict[str, object]:
        raise RuntimeError("component bug")

    app.add_component("serena", serena)
    app.add_component("broken", broken)
    wire = await connect(app)
    await wire.call(1, "ping")
    await wire.call(2, "no.such")
    status = (await wire.call(3, "status"))["result"]
    assert status["version"] == __version__
    assert status["pid"] == os.getpid()
    assert status["instance_id"] == app.instance_id
    assert status["socket"] == f"{short_tmp}/d.sock"
    assert status["config_path"] is None
    assert status["config_generation"] == 1
    assert status["last_reload"] is None
    assert 0 <= status["uptime_s"] < 60
    assert status["connections"] == {"open": 1, "total": 1, "refused": 0}
    assert status["requests"] == {"total": 3, "in_flight": 1, "failed": 1, "cancelled": 0}
    assert status["errors"] == {"unknown_method": 1}
    assert status["methods"] == {"ping": 1, "status": 1}  # unknown names are not keys
    assert status["components"]["serena"] == {"state": "warming"}
    assert "error" in status["components"]["broken"]
    assert calls == [1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_reload_applies_a_new_config_and_rejects_a_bad_one(start_daemon, connect, short_tmp):
    cfg = _write(Path(short_tmp) / "config.toml", "[daemon]\nmax_in_flight = 5\n")
    app = await start_daemon(app_kwargs={"config_option": cfg})
    wire = await connect(app)

    ok = await wire.call(1, "config.reload")
    assert ok["result"] == {"generation": 2, "config_path": str(cfg), "changed": True}
    assert app.config.daemon.max_in_flight == 5
    # The socket path cannot change while running: it keeps its start-up value.
    assert app.config.daemon.socket == f"{short_tmp}/d.sock"

    again = await wire.call(2, "config.reload")
    assert again["result"] == {"generation": 3, "config_path": str(cfg), "changed": False}

    _write(cfg, "[daemon]\nmax_in_flight = 'many'\n")
    bad = await wire.call(3, "config.reload")
    assert bad["type"] == "error" and bad["code"] == "bad_config"
    assert str(cfg) in bad["message"] and "$.daemon.max_in_flight" in bad["message"]
    assert "\n" not in bad["message"]
    assert app.config.daemon.max_in_flight == 5
    status = (await wire.call(4, "status"))["result"]
    assert status["config_generation"] == 3
    assert status["last_reload"]["ok"] is False
    assert "max_in_flight" in status["last_reload"]["error"]


async def test_reload_without_a_config_file_uses_defaults(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    reply = await wire.call(1, "config.reload")
    assert reply["result"]["generation"] == 2
    assert reply["result"]["config_path"] is None


async def test_routerd_errors_keep_code_message_and_data(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    reply = await wire.call(1, "test.error", {"code": "timeout", "message": "too slow\nsecond"})
    assert reply == {"type": "error", "id": 1, "code": "timeout", "message": "too slow",
                     "data": {"why": "test"}}


async def test_a_bug_is_internal_and_logged_once_never_sent(start_daemon, connect, caplog):
    caplog.set_level(logging.ERROR, logger="routerd")
    app = await start_daemon()
    wire = await connect(app)
    reply = await wire.call(1, "test.fail")
    assert reply["code"] == "internal" and reply["message"] == INTERNAL_MESSAGE
    assert "secret" not in reply["message"]
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1 and "test.fail" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], ValueError)
    assert (await wire.call(2, "test.unencodable"))["code"] == "internal"
    assert (await wire.call(3, "ping"))["type"] == "result"


async def test_an_error_inside_a_nursery_keeps_its_code(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    reply = await wire.call(1, "test.group")
    assert reply["code"] == "not_found" and reply["message"] == "model 'x' is not known"


def test_error_types_carry_protocol_codes():
    assert BadRequest("bad").code == "bad_request"
    assert RouterdError("x", code="timeout").code == "timeout"
    assert RouterdError("x").code == "internal"
    for code in ERROR_CODES:
        assert error_for_code(code, "m").code == code
    with pytest.raises(ValueError):
        RouterdError("x", code="nope")
    assert RouterdError("first\nsecond").message == "first"


def test_registry_refuses_duplicates_and_lists_names():
    registry = Registry()

    async def handler(ctx: RequestContext, params: EmptyParams) -> None:
        return None

    registry.add("b", handler)
    registry.method("a")(handler)
    assert registry.names() == ["a", "b"]
    with pytest.raises(ValueError):
        registry.add("a", handler)
    registry.add("a", handler, replace=True)
    assert "a" in registry and len(registry) == 2
    assert registry.get("b") is not None and registry.get("b").streaming is False
    with pytest.raises(TypeError):
        registry.add("c", handler, params=object)
    assert registry.add("d", handler, inline=True).inline is True
    assert registry.get("b").inline is False


async def test_reload_applies_limits_to_new_connections(start_daemon, connect, short_tmp):
    cfg = _write(Path(short_tmp) / "config.toml", "[daemon]\nmax_frame_size = 8192\n")
    app = await start_daemon(max_frame_size=4096, app_kwargs={"config_option": cfg})
    old = await connect(app)
    assert (await old.call(1, "config.reload"))["result"]["changed"] is True
    assert (await old.call(2, "hello"))["result"]["max_frame_size"] == 4096
    new = await connect(app)
    assert (await new.call(1, "hello"))["result"]["max_frame_size"] == 8192


async def test_reload_hooks_see_old_and_new_config_and_a_failing_hook_is_contained(
    start_daemon, connect, short_tmp
):
    cfg = _write(Path(short_tmp) / "config.toml", "[daemon]\nmax_in_flight = 7\n")
    app = await start_daemon(app_kwargs={"config_option": cfg})
    seen: list[tuple[int, int]] = []

    def broken(old, new):
        raise RuntimeError("hook bug")

    app.add_reload_hook(broken)
    app.add_reload_hook(lambda old, new: seen.append((old.daemon.max_in_flight,
                                                       new.daemon.max_in_flight)))
    wire = await connect(app)
    ok = await wire.call(1, "config.reload")
    assert ok["result"]["generation"] == 2
    assert seen == [(64, 7)]
    # A rejected configuration calls no hook.
    _write(cfg, "[daemon]\nmax_in_flight = 0\n")
    assert (await wire.call(2, "config.reload"))["code"] == "bad_config"
    assert seen == [(64, 7)]
