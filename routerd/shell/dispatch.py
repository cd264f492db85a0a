"""The method registry: which methods the daemon serves, their params types and handlers.

A method is registered once, by name, with the msgspec type its ``params`` decode into and an
async handler:

* plain methods: ``async def handler(ctx: RequestContext, params: P) -> Any``; the return
  value (anything msgspec can encode) becomes the ``result`` frame;
* streaming methods: ``async def handler(ctx: RequestContext, params: P, stream: Stream) ->
  Any``; each ``await stream.emit(event, data)`` sends one ``event`` frame, and the return value
  becomes the ``data`` of the final ``end`` event.

A handler answers with an error by raising a :class:`routerd.core.errors.RouterdError`; any
other exception is a bug, logged with its traceback and answered ``internal``. Handlers are
cancelled (``trio.Cancelled``) when the client cancels, disconnects, stops reading a stream for
too long, or the daemon shuts down; they must let that exception propagate.

Example::

    registry = Registry()

    @registry.method("ping")
    async def ping(ctx: RequestContext, params: EmptyParams) -> dict[str, Any]:
        return {}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from routerd_client.protocol import AgentInfo, ClientInfo, EmptyParams

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "AccessHook",
    "ConnectionInfo",
    "RequestContext",
    "Stream",
    "Handler",
    "StreamHandler",
    "Method",
    "Registry",
]

P = TypeVar("P")


@dataclass(slots=True)
class ConnectionInfo:
    """What the daemon knows about one client connection. Handlers may update ``client`` and
    ``agent`` (``hello`` does)."""

    id: int
    opened_at: float  # wall clock, seconds since the epoch
    max_frame_size: int = 0  # the frame limit this connection's reader enforces
    peer_pid: int | None = None
    peer_uid: int | None = None  # None: unknown; osdeps.SELF_UID: a named-pipe peer (Windows)
    peer_gid: int | None = None
    peer_groups: tuple[int, ...] = ()  # supplementary groups (SO_PEERGROUPS), when checked
    client: ClientInfo | None = None
    agent: AgentInfo | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Passed to every handler: the daemon, the connection, and this request's id and method."""

    app: App
    conn: ConnectionInfo
    request_id: int
    method: str


class AccessHook(Protocol):
    """Who may connect and call what (``app.access``; ``routerd.shell.access`` implements it)."""

    def admit(self, info: ConnectionInfo, sock: Any) -> str | None:
        """Fill ``info``'s peer credentials from ``sock``; return why it is refused, or None."""
        ...

    def authorize(self, info: ConnectionInfo, method: str) -> str | None:
        """Why ``info``'s peer may not call ``method``, or None if it may."""
        ...


class Stream(Protocol):
    """The sending side of a streaming reply."""

    async def emit(self, event: str, data: Any = None, *, flush: bool = True) -> None:
        """Send one non-final ``event`` frame.

        ``flush=False`` lets the frame linger (up to ``outbound.LINGER``) for the next frame,
        to go out in one write with it (for events nobody waits on at once); frames always
        keep their order.

        Waits while this stream already has ``daemon.stream_queue`` frames waiting to be
        written; after ``daemon.slow_consumer_timeout`` seconds of waiting the request is
        cancelled (the handler sees ``trio.Cancelled``) and ends with ``slow_consumer``.
        ``event`` must not be ``"end"``: the handler's return value ends the stream.
        """
        ...

    def emit_nowait(self, event: str, data: Any = None) -> bool:
        """As ``emit(event, data, flush=False)`` without waiting: False, and nothing queued,
        when the stream has no room for it now."""
        ...


Handler = Callable[[RequestContext, Any], Awaitable[Any]]
StreamHandler = Callable[[RequestContext, Any, Stream], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type[Any]
    handler: Callable[..., Awaitable[Any]]
    streaming: bool
    #: Run in the connection's reader instead of a task of its own (see ``Registry.add``).
    inline: bool = False


def _check_params_type(name: str, params: Any) -> None:
    """Params are maps on the wire: the type must be a msgspec Struct or a dict type."""
    try:
        info = msgspec.inspect.type_info(params)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"method {name!r}: params type {params!r} is not msgspec-decodable") from exc
    if not isinstance(info, (msgspec.inspect.StructType, msgspec.inspect.DictType)):
        raise TypeError(f"method {name!r}: params type must be a msgspec Struct or a dict type")


class Registry:
    """Methods by name. Register before the server starts; lookups happen per request."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def add(
        self,
        name: str,
        handler: Callable[[RequestContext, Any], Awaitable[Any]],
        *,
        params: type[Any] = EmptyParams,
        replace: bool = False,
        inline: bool = False,
    ) -> Method:
        """Register a plain method. Raises ``ValueError`` if ``name`` is taken (unless
        ``replace``).

        ``inline=True`` is for handlers that never wait (no I/O, no sleeps, no locks): they
        run in the connection's reader, which saves a task per request; a handler that did wait
        would stall its connection's reading, and a ``cancel`` for it would be read only after
        it returned.
        """
        return self._add(Method(name, params, handler, streaming=False, inline=inline), replace)

    def add_stream(
        self,
        name: str,
        handler: Callable[[RequestContext, Any, Stream], Awaitable[Any]],
        *,
        params: type[Any] = EmptyParams,
        replace: bool = False,
    ) -> Method:
        """Register a streaming method. Raises ``ValueError`` if ``name`` is taken."""
        return self._add(Method(name, params, handler, streaming=True), replace)

    def method(
        self, name: str, *, params: type[Any] = EmptyParams, inline: bool = False
    ) -> Callable[[Callable[[RequestContext, P], Awaitable[Any]]], Callable[
        [RequestContext, P], Awaitable[Any]]]:
        """Decorator form of :meth:`add`."""

        def register(
            fn: Callable[[RequestContext, P], Awaitable[Any]],
        ) -> Callable[[RequestContext, P], Awaitable[Any]]:
            self.add(name, fn, params=params, inline=inline)
            return fn

        return register

    def stream(
        self, name: str, *, params: type[Any] = EmptyParams
    ) -> Callable[[Callable[[RequestContext, P, Stream], Awaitable[Any]]], Callable[
        [RequestContext, P, Stream], Awaitable[Any]]]:
        """Decorator form of :meth:`add_stream`."""

        def register(
            fn: Callable[[RequestContext, P, Stream], Awaitable[Any]],
        ) -> Callable[[RequestContext, P, Stream], Awaitable[Any]]:
            self.add_stream(name, fn, params=params)
            return fn

        return register

    def _add(self, method: Method, replace: bool) -> Method:
        if not method.name or not isinstance(method.name, str):
            raise ValueError("a method needs a non-empty name")
        if method.name in self._methods and not replace:
            raise ValueError(f"method {method.name!r} is already registered")
        _check_params_type(method.name, method.params)
        self._methods[method.name] = method
        return method

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        """Registered method names, sorted (``hello`` reports them as capabilities)."""
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[Method]:
        return iter(list(self._methods.values()))

    def __len__(self) -> int:
        return len(self._methods)
