"""Execution adapters: one chat request to one model server, as routerd stream events.

Public surface::

    run_chat(client, target, request, timeouts) -> AsyncIterator[StreamEvent]
    ChatBackend        the Protocol the route executor depends on
    HttpChatBackend    ChatBackend over an httpx.AsyncClient or a ChatTransport
    ChatTransport      the Protocol of the HTTP client under run_chat (``upstream``)
    HttpxTransport     ChatTransport over an httpx.AsyncClient
    WireTransport      ChatTransport over the lean WireClient (``wire``), httpx for the rest
    WireClient         the lean HTTP/1.1 client for plain http:// model servers

The values live in the pure core and are re-exported here for convenience: ``ChatTarget``,
``ChatRequest`` (``routerd.core.chat``), ``Timeouts`` (``routerd.core.fallback``) and the
events (``routerd.core.streams``).
"""

from routerd.core.chat import ChatRequest, ChatTarget, Flavor
from routerd.core.fallback import Timeouts
from routerd.core.streams import (
    Chunk,
    Done,
    Finish,
    ModelReported,
    Reasoning,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

from .chat import ChatBackend, HttpChatBackend, run_chat
from .upstream import ChatTransport, HttpxTransport, WireTransport
from .wire import WireClient

__all__ = [
    "ChatBackend",
    "HttpChatBackend",
    "run_chat",
    "ChatTransport",
    "HttpxTransport",
    "WireTransport",
    "WireClient",
    "ChatRequest",
    "ChatTarget",
    "Flavor",
    "Timeouts",
    "Chunk",
    "Done",
    "Finish",
    "ModelReported",
    "Reasoning",
    "StreamError",
    "StreamEvent",
    "ToolCallDelta",
    "Usage",
]
