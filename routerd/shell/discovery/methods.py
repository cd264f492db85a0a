"""The wire methods of discovery: ``services.list``, ``models.list``, ``events.subscribe``.

``docs/protocol.md`` §7 describes them for clients. The two lists never wait (they read the
registry), so they run inline in the connection's reader.
"""

from __future__ import annotations

from typing import Any

from routerd.core.errors import NotFound, SlowConsumer
from routerd.shell.dispatch import Registry, RequestContext, Stream
from routerd_client.protocol import (
    EmptyParams,
    EventsSnapshot,
    ModelsListParams,
    ModelsListResult,
    ServicesListResult,
    SubscribeParams,
)

from .events import SubscriberDropped
from .registry import ServiceRegistry

__all__ = ["register_methods"]


def register_methods(methods: Registry, services: ServiceRegistry) -> None:
    """Add the discovery methods to ``methods``, answering from ``services``."""

    async def services_list(ctx: RequestContext, params: EmptyParams) -> ServicesListResult:
        return ServicesListResult(services.services(), services.summary()["summary"])

    async def models_list(ctx: RequestContext, params: ModelsListParams) -> ModelsListResult:
        if params.service is not None and services.get(params.service) is None:
            known = ", ".join(m.name for m in services.monitors()) or "none yet"
            raise NotFound(f"no service named {params.service!r} (known: {known})")
        return ModelsListResult(services.models(params.service, available=params.available))

    async def events_subscribe(
        ctx: RequestContext, params: SubscribeParams, stream: Stream
    ) -> dict[str, Any]:
        # Subscribe before taking the snapshot: no change can fall between the two.
        with services.subscribe() as sub:
            if params.snapshot:
                await stream.emit(
                    "snapshot", EventsSnapshot(services.services(), services.models())
                )
            try:
                async for name, data in sub:
                    await stream.emit(name, data)
            except SubscriberDropped as exc:
                raise SlowConsumer(f"event subscriber dropped: {exc}") from None
        return {}

    methods.add("services.list", services_list, inline=True)
    methods.add("models.list", models_list, params=ModelsListParams, inline=True)
    methods.add_stream("events.subscribe", events_subscribe, params=SubscribeParams)
