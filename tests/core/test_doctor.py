"""The daemon side of the deployment checklist (pure)."""

from __future__ import annotations

from routerd.core.doctor import DaemonFacts, evaluate


def facts(**kw: object) -> DaemonFacts:
    base: dict[str, object] = dict(
        environment="air-gapped", allow_external=False, networks=["127.0.0.0/8"],
        names=["localhost"], audit_enabled=True, audit_running=True, key_mode=0o100600,
        log_mode=0o100600, checksum_checked=3, socket_path="/run/r.sock",
        socket_mode=0o140600, socket_uid=0, daemon_uid=0, access_control=True,
    )  # fmt: skip
    base.update(kw)
    return DaemonFacts(**base)  # type: ignore[arg-type]


def status(checks: list, name: str) -> str:  # type: ignore[type-arg]
    return next(c.status for c in checks if c.name == name)


def test_all_pass() -> None:
    checks = evaluate(facts())
    assert {c.status for c in checks} == {"pass"}
    assert all(not c.fix for c in checks)


def test_failures_say_what_to_do() -> None:
    checks = evaluate(
        facts(networks=["0.0.0.0/0"], key_mode=0o100644, log_query_text=True,
              socket_mode=0o140666, checksum_failed=["/m/x.gguf"])
    )  # fmt: skip
    for name in (
        "allowlist is tight", "audit files are private", "queries are not logged in plaintext",
        "socket mode and owner", "model checksums verify",
    ):  # fmt: skip
        assert status(checks, name) == "fail", name
    assert all(c.fix for c in checks if c.status != "pass")


def test_public_network_and_external_flag_fail() -> None:
    assert status(evaluate(facts(networks=["8.8.8.0/24"])), "allowlist is tight") == "fail"
    assert status(evaluate(facts(allow_external=True)), "allowlist is tight") == "fail"
    assert status(evaluate(facts(networks=["10.0.0.0/8"])), "allowlist is tight") == "pass"


def test_cannot_tell() -> None:
    checks = evaluate(facts(checksum_checked=0, socket_mode=None))
    assert status(checks, "model checksums verify") == "unknown"
    assert status(checks, "socket mode and owner") == "unknown"


def test_group_socket_may_be_0660() -> None:
    checks = evaluate(facts(socket_mode=0o140660, socket_group="routerd"))
    assert status(checks, "socket mode and owner") == "pass"
    assert status(evaluate(facts(socket_mode=0o140660)), "socket mode and owner") == "fail"
