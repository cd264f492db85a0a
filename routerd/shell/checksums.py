"""Hashing local model files against their expected SHA-256 (decisions: core.checksums).

Files are hashed in a worker thread, one at a time (a model file is gigabytes; two at once would
only fight over the disk). A file whose size and mtime have not changed since it was last
hashed is not hashed again. With ``security.verify_checksums`` the daemon runs a check after
READY; ``routerctl verify`` runs one on request. Each failure is a ``security:checksum_mismatch``
(or ``checksum_missing``) event, and its models are blocked: routing asks
:func:`model_blocked` before choosing a model.

Ollama's store is found at ``security.ollama_models``, else ``$OLLAMA_MODELS``, else the first
of ``~/.ollama/models``, ``/usr/share/ollama/.ollama/models``, ``/var/lib/ollama/models``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from routerd.core.checksums import (
    ChecksumTarget,
    blob_digest,
    blocked_models,
    judge,
    manifest_digests,
    ollama_model_name,
    plan_targets,
)
from routerd.core.config import Config
from routerd_client.protocol import ChecksumInfo, VerifyResult

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "Checksums",
    "blocked_models_of",
    "find_ollama_store",
    "model_blocked",
    "scan_ollama",
    "sha256_file",
]

log = logging.getLogger(__name__)

_STATES: weakref.WeakKeyDictionary[Any, Checksums] = weakref.WeakKeyDictionary()


def sha256_file(path: str) -> str:
    """The SHA-256 of the file at ``path`` (hex). Blocking."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def find_ollama_store(configured: str | None, env: Mapping[str, str]) -> Path | None:
    """Ollama's model directory, or None if there is none."""
    if configured:
        return Path(configured)
    candidates = []
    if env.get("OLLAMA_MODELS"):
        candidates.append(Path(env["OLLAMA_MODELS"]))
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".ollama" / "models")
    candidates += [Path("/usr/share/ollama/.ollama/models"), Path("/var/lib/ollama/models")]
    for c in candidates:
        if (c / "blobs").is_dir():
            return c
    return None


def scan_ollama(store: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(blobs, models)`` of an Ollama store: digest -> path, model -> digests. Blocking."""
    blobs: dict[str, str] = {}
    blob_dir = store / "blobs"
    if blob_dir.is_dir():
        for p in blob_dir.iterdir():
            digest = blob_digest(p.name)
            if digest is not None and p.is_file():
                blobs[digest] = str(p)
    models: dict[str, list[str]] = {}
    manifests = store / "manifests"
    if manifests.is_dir():
        for p in manifests.rglob("*"):
            if not p.is_file():
                continue
            try:
                doc = json.loads(p.read_bytes())
            except (OSError, ValueError):
                log.warning("unreadable Ollama manifest %s", p)
                continue
            models[ollama_model_name(p.relative_to(manifests).parts)] = manifest_digests(doc)
    return blobs, models


class Checksums:
    """The last results and the models they block, per daemon."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._cache: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, digest)
        self._lock = trio.Lock()
        self.results: list[ChecksumInfo] = []
        self.blocked: dict[str, str] = {}
        self.checked_at: float | None = None
        self.progress = ""
        _STATES[app] = self

    def targets(self, config: Config) -> list[ChecksumTarget]:
        """What to check under ``config``. Blocking (lists directories)."""
        store = find_ollama_store(config.security.ollama_models, self._app.env)
        blobs, models = scan_ollama(store) if store is not None else ({}, {})
        configured = [(m.path, m.sha256, m.model) for m in config.security.model_checksums]
        return plan_targets(ollama_blobs=blobs, ollama_models=models, configured=configured)

    def _hash(self, target: ChecksumTarget) -> ChecksumInfo:
        try:
            st = os.stat(target.path)
        except FileNotFoundError:
            return judge(target, None, missing=True)
        except OSError as exc:
            return judge(target, None, error=exc.strerror or str(exc))
        cached = self._cache.get(target.path)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return judge(target, cached[2])
        try:
            digest = sha256_file(target.path)
        except OSError as exc:
            return judge(target, None, error=exc.strerror or str(exc))
        self._cache[target.path] = (st.st_size, st.st_mtime_ns, digest)
        return judge(target, digest)

    async def run_check(self, models: Sequence[str] = ()) -> VerifyResult:
        """Hash every target (or those of ``models``), record failures, update the blocks."""
        async with self._lock:
            config = self._app.config
            targets = await trio.to_thread.run_sync(self.targets, config)
            if models:
                wanted = set(models)
                targets = [t for t in targets if wanted & set(t.models)]
            results: list[ChecksumInfo] = []
            for i, target in enumerate(targets, 1):
                self.progress = f"hashing {i}/{len(targets)}: {target.path}"
                results.append(await trio.to_thread.run_sync(self._hash, target))
            self.progress = ""
            for r in results:
                if r.status != "ok":
                    self._app.audit.security(
                        f"checksum_{r.status}", f"{r.path}: {r.detail}", path=r.path,
                        expected=r.expected, actual=r.actual, models=",".join(r.models) or None,
                    )  # fmt: skip
            if models:
                done = {r.path for r in results}
                self.results = [r for r in self.results if r.path not in done] + results
            else:
                self.results = results
            self.checked_at = trio.current_time()
            self.blocked = blocked_models(self.results) if config.security.verify_checksums else {}
            return VerifyResult(
                ok=all(r.status == "ok" for r in results),
                files=results,
                blocked_models=sorted(self.blocked),
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The check at start (after READY) when ``security.verify_checksums`` is on."""
        task_status.started()
        if self._app.config.security.verify_checksums:
            result = await self.run_check()
            log.info(
                "model checksums: %d file(s) checked, %d blocked model(s)",
                len(result.files), len(result.blocked_models),
            )  # fmt: skip

    def status(self) -> dict[str, Any]:
        bad = [r.path for r in self.results if r.status != "ok"]
        out: dict[str, Any] = {
            "checked": len(self.results),
            "failed": bad,
            "blocked_models": sorted(self.blocked),
        }
        if self.progress:
            out["progress"] = self.progress
        return out


def model_blocked(app: App, model: str) -> str | None:
    """Why ``model`` must not be routed to (a failed checksum), or None. Cheap; for routing."""
    return blocked_models_of(app).get(model)


_NONE_BLOCKED: Mapping[str, str] = MappingProxyType({})


def blocked_models_of(app: App) -> Mapping[str, str]:
    """Every model :func:`model_blocked` names, with why (empty when nothing is blocked or
    checksums are not part of the daemon). Routing reads it once per request."""
    state = _STATES.get(app)
    return _NONE_BLOCKED if state is None else state.blocked
