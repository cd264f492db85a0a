"""With ``security.verify_checksums``, a model whose file failed its checksum is not routed to,
and the plan says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routerd.shell.checksums import Checksums, model_blocked


def checksums(short_tmp: str, *models: str) -> str:
    """Configuration: each of ``models`` has a file whose SHA-256 is not the one expected."""
    gguf = Path(short_tmp) / "m.gguf"
    gguf.write_bytes(b"GGUF tampered")
    lines = [f'[security]\nverify_checksums = true\nollama_models = "{short_tmp}/no-ollama"']
    for m in models:
        lines.append(f'[[security.model_checksums]]\npath = "{gguf}"\nsha256 = "{"0" * 64}"\n'
                     f'model = "{m}"')  # fmt: skip
    return "\n".join(lines)


async def test_a_blocked_model_is_left_out_and_the_plan_says_why(
    rk: Any, start_routing: Any, connect: Any, short_tmp: str
) -> None:
    s = await start_routing(extra=checksums(short_tmp, "qwen2.5-coder:7b"))
    result = await Checksums(s.app).run_check()
    assert result.blocked_models == ["qwen2.5-coder:7b"]
    assert model_blocked(s.app, "qwen2.5-coder:7b") is not None
    wire = await connect(s.app)
    events, final = await rk.route(wire, 1, {"query": rk.QUERY, "category": "coding"})
    assert final["event"] == "end", final
    (selected,) = rk.named(events, "selected")
    assert selected["service"] == "llamacpp"  # Ollama (priority 1) serves the blocked one
    why = [line for line in selected["explain"] if "ollama/qwen2.5-coder:7b" in line]
    assert why == [f"not used: ollama/qwen2.5-coder:7b: blocked (checksum mismatch: "
                   f"{short_tmp}/m.gguf)"]  # fmt: skip
    assert rk.chat_requests(s.first) == []


async def test_when_every_model_is_blocked_the_error_says_so(
    rk: Any, start_routing: Any, connect: Any, short_tmp: str
) -> None:
    s = await start_routing(
        extra=checksums(short_tmp, "qwen2.5-coder:7b", "qwen2.5-coder-7b-instruct")
    )
    await Checksums(s.app).run_check()
    wire = await connect(s.app)
    _, final = await rk.route(wire, 1, {"query": rk.QUERY, "model": "qwen2.5-coder:7b"})
    assert final["type"] == "error" and final["code"] == "unavailable", final
    assert "blocked (checksum mismatch" in final["message"]
    assert rk.chat_requests(s.first) == rk.chat_requests(s.second) == []


async def test_the_http_fronts_model_lists_leave_a_blocked_model_out(
    start_routing: Any, short_tmp: str
) -> None:
    from routerd.shell.fronts.engine import model_facts

    s = await start_routing(extra=checksums(short_tmp, "qwen2.5-coder:7b"))
    listed = [f.id for f in model_facts(s.app)]
    assert "qwen2.5-coder:7b" in listed
    await Checksums(s.app).run_check()
    listed = [f.id for f in model_facts(s.app)]
    assert "qwen2.5-coder:7b" not in listed
    assert "qwen2.5-coder-7b-instruct" in listed  # the llama.cpp one is still served
