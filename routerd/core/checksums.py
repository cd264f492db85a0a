"""Model file checksums: what to hash, what each file must hash to, and what fails.

Two sources of expected digests:

* Ollama's store is content-addressed: ``blobs/sha256-<hex>`` must hash to ``<hex>``. A model's
  manifest (``manifests/<registry>/<namespace>/<model>/<tag>``, JSON) lists its blobs
  (``config.digest`` and each ``layers[].digest``, as ``sha256:<hex>``), which is how a bad
  blob is traced to the models that use it.
* GGUF files and other single files are listed in ``security.model_checksums`` with their
  SHA-256 and, optionally, the model id their server reports.

Invariants: pure (the shell lists directories and hashes files); digests compare in lower
case; a model is blocked if any file it uses is not ``ok`` (mismatch, missing, unreadable).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from routerd_client.protocol import ChecksumInfo

__all__ = [
    "ChecksumTarget",
    "blob_digest",
    "blocked_models",
    "judge",
    "manifest_digests",
    "ollama_model_name",
    "plan_targets",
]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_DEFAULT_REGISTRY = "registry.ollama.ai"


class ChecksumTarget(msgspec.Struct, frozen=True):
    """One file to hash and the digest it must have."""

    path: str
    expected: str
    source: str  # "ollama" or "config"
    models: tuple[str, ...] = ()


def blob_digest(name: str) -> str | None:
    """The digest an Ollama blob file's name promises (``sha256-<hex>``), or None."""
    for prefix in ("sha256-", "sha256:"):
        if name.startswith(prefix):
            hex_ = name[len(prefix) :].lower()
            return hex_ if _HEX64.match(hex_) else None
    return None


def manifest_digests(doc: Any) -> list[str]:
    """The blob digests (hex) an Ollama manifest (decoded JSON) refers to, in order."""
    out: list[str] = []
    if not isinstance(doc, Mapping):
        return out
    entries: list[Any] = [doc.get("config")]
    layers = doc.get("layers")
    if isinstance(layers, list):
        entries += layers
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("digest"), str):
            digest = blob_digest(entry["digest"])
            if digest is not None and digest not in out:
                out.append(digest)
    return out


def ollama_model_name(parts: Sequence[str]) -> str:
    """The name Ollama shows for the manifest at ``manifests/<parts...>``.

    ``registry.ollama.ai/library/llama3/latest`` -> ``llama3:latest``;
    ``registry.ollama.ai/alice/coder/7b`` -> ``alice/coder:7b``;
    ``host:5000/team/coder/q4`` -> ``host:5000/team/coder:q4``.
    """
    if len(parts) < 2:
        return "/".join(parts)
    *path, model, tag = parts
    if path and path[0] == _DEFAULT_REGISTRY:
        path = path[1:]
        if path and path[0] == "library":
            path = path[1:]
    return "/".join([*path, model]) + ":" + tag


def plan_targets(
    *,
    ollama_blobs: Mapping[str, str],
    ollama_models: Mapping[str, Sequence[str]],
    configured: Iterable[tuple[str, str, str | None]],
) -> list[ChecksumTarget]:
    """Every file to check.

    ``ollama_blobs``: blob digest -> path of the blobs present; ``ollama_models``: model name
    -> the digests its manifest lists (a listed blob that is absent is a ``missing`` target);
    ``configured``: ``(path, sha256, model)`` from ``security.model_checksums``.
    """
    users: dict[str, list[str]] = {}
    for model, digests in ollama_models.items():
        for d in digests:
            users.setdefault(d, []).append(model)
    targets: list[ChecksumTarget] = []
    blob_dir = ""
    for digest, path in sorted(ollama_blobs.items()):
        blob_dir = path.rsplit("/", 1)[0]
        models = tuple(sorted(users.get(digest, ())))
        targets.append(ChecksumTarget(path, digest, "ollama", models))
    for digest in sorted(set(users) - set(ollama_blobs)):
        absent = f"{blob_dir}/sha256-{digest}" if blob_dir else f"sha256-{digest}"
        targets.append(ChecksumTarget(absent, digest, "ollama", tuple(sorted(users[digest]))))
    for file, sha, named in configured:
        targets.append(ChecksumTarget(file, sha.lower(), "config", (named,) if named else ()))
    return targets


def judge(
    target: ChecksumTarget, actual: str | None, *, missing: bool = False, error: str = ""
) -> ChecksumInfo:
    """The outcome for one target given what hashing it gave."""
    status, detail = "ok", ""
    if missing:
        status, detail = "missing", "the file does not exist"
    elif actual is None:
        status, detail = "error", error or "could not be read"
    elif actual.lower() != target.expected:
        status = "mismatch"
        detail = "the file's SHA-256 differs from the expected one: altered or corrupt"
    return ChecksumInfo(
        path=target.path,
        status=status,
        source=target.source,
        expected=target.expected,
        actual=actual.lower() if actual is not None else None,
        models=list(target.models),
        detail=detail,
    )


def blocked_models(results: Iterable[ChecksumInfo]) -> dict[str, str]:
    """Model -> why it must not be routed to, for every model with a file that is not ok.

    An Ollama name ending in ``:latest`` is blocked under its short name too.
    """
    out: dict[str, str] = {}
    for r in results:
        if r.status == "ok":
            continue
        reason = f"checksum {r.status}: {r.path}"
        for model in r.models:
            out.setdefault(model, reason)
            if model.endswith(":latest"):
                out.setdefault(model[: -len(":latest")], reason)
    return out
