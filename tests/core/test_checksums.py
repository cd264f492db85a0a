"""Model checksum planning and judging (pure)."""

from __future__ import annotations

from routerd.core.checksums import (
    ChecksumTarget,
    blob_digest,
    blocked_models,
    judge,
    manifest_digests,
    ollama_model_name,
    plan_targets,
)

A = "a" * 64
B = "b" * 64
C = "c" * 64


def test_blob_names() -> None:
    assert blob_digest(f"sha256-{A}") == A
    assert blob_digest(f"sha256:{A.upper()}") == A
    assert blob_digest("sha256-abc") is None
    assert blob_digest(f"{A}") is None


def test_manifest_digests() -> None:
    doc = {
        "schemaVersion": 2,
        "config": {
            "digest": f"sha256:{A}",
            "mediaType": "application/vnd.docker.container.image.v1+json",
        },
        "layers": [{"digest": f"sha256:{B}"}, {"digest": f"sha256:{A}"}, {"digest": "bogus"}],
    }
    assert manifest_digests(doc) == [A, B]
    assert manifest_digests([]) == []


def test_model_names() -> None:
    assert (
        ollama_model_name(["registry.ollama.ai", "library", "llama3", "latest"]) == "llama3:latest"
    )
    assert ollama_model_name(["registry.ollama.ai", "alice", "coder", "7b"]) == "alice/coder:7b"
    assert ollama_model_name(["host:5000", "team", "coder", "q4"]) == "host:5000/team/coder:q4"


def test_plan_and_judge_and_block() -> None:
    targets = plan_targets(
        ollama_blobs={A: f"/m/blobs/sha256-{A}"},
        ollama_models={"llama3:latest": [A, B]},
        configured=[("/models/x.gguf", C.upper(), "x-model")],
    )
    assert [(t.path, t.expected, t.source, t.models) for t in targets] == [
        (f"/m/blobs/sha256-{A}", A, "ollama", ("llama3:latest",)),
        (f"/m/blobs/sha256-{B}", B, "ollama", ("llama3:latest",)),
        ("/models/x.gguf", C, "config", ("x-model",)),
    ]
    ok = judge(targets[0], A.upper())
    missing = judge(targets[1], None, missing=True)
    bad = judge(targets[2], A)
    assert (ok.status, missing.status, bad.status) == ("ok", "missing", "mismatch")
    blocked = blocked_models([ok, missing, bad])
    assert set(blocked) == {"llama3:latest", "llama3", "x-model"}
    assert "mismatch" in blocked["x-model"]
    err = judge(ChecksumTarget("/p", A, "config"), None, error="Permission denied")
    assert err.status == "error" and err.detail == "Permission denied"
