"""Starting fakes: ``start_fake(nursery, kind, **opts) -> FakeServer``.

``kind`` is a ``routerd.core.services.ServiceKind`` value (``ollama``, ``lmstudio``, ``jan``,
``openwebui``, ``localai``, ``vllm``, ``llamacpp``, ``koboldcpp``, ``gpt4all``, ``textgen``,
``llama_cpp_python``, ``openai_compat``) or ``foreign`` / ``routerd``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

# Importing the kind modules registers them.
from fakes import app_kinds, llamacpp, local_kinds, ollama, openai_kinds  # noqa: F401
from fakes.kinds import KINDS, spec
from fakes.state import FakeModel, FakeServer, Script, State

__all__ = ["start_fake", "fake_server", "KIND_NAMES"]

KIND_NAMES: tuple[str, ...] = tuple(sorted(KINDS))
_DEFAULT = object()


async def start_fake(
    nursery: trio.Nursery,
    kind: str,
    *,
    models: list[FakeModel] | None = None,
    state: State = "ready",
    delay: float = 0.0,
    api_key: Any = _DEFAULT,
    script: Script | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.time,
    **options: Any,
) -> FakeServer:
    """Start a fake ``kind`` server in ``nursery``, listening once this returns.

    ``models``: what it serves (each kind has realistic defaults). ``api_key``: the bearer
    token it requires (default: none, except Open WebUI ``"sk-openwebui-fake"`` and Jan
    ``"jan-fake-key"``, whose real servers always require one; pass ``None`` to drop it).
    ``clock``: epoch seconds for ``created``/``Date`` fields (freeze it to compare bytes).
    Kind options: ``version``; llamacpp ``slots`` (4), ``media_marker``, ``model_path``;
    llama_cpp_python ``interrupt_requests`` (False); routerd ``instance_id``; openwebui
    ``deployment_id``.
    """
    kind_spec = spec(kind)
    fake = FakeServer(
        kind_spec,
        models=models,
        api_key=kind_spec.default_api_key if api_key is _DEFAULT else api_key,
        clock=clock,
        host=host,
        port=port,
        options=options,
    )
    fake.state = state
    fake.delay = delay
    if script is not None:
        fake.script = script
    await nursery.start(fake.http.run)
    return fake


@asynccontextmanager
async def fake_server(kind: str, **opts: Any) -> AsyncIterator[FakeServer]:
    """``async with fake_server("ollama") as fake:`` — a fake for the block's duration."""
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, kind, **opts)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()
