"""Protocol-faithful fake model servers for routerd's tests (see README.md here).

fake = await fakes.start_fake(nursery, "ollama")
fake.script = fakes.Script(chunks=["def ", "f():"], chunk_delay=0.05)
... fake.requests, fake.disconnects, await fake.down(), await fake.up()
"""

from fakes.http import ClientDisconnected, Exchange, HTTPServer, Request, serve_http
from fakes.kinds import KINDS, KindSpec
from fakes.ollama import QUEUE_FULL
from fakes.servers import KIND_NAMES, fake_server, start_fake
from fakes.state import (
    STATES,
    Failure,
    FakeModel,
    FakeServer,
    RecordedRequest,
    Script,
    State,
    ToolCall,
)

__all__ = [
    "ClientDisconnected",
    "Exchange",
    "HTTPServer",
    "Request",
    "serve_http",
    "serve_fake",
    "KINDS",
    "KIND_NAMES",
    "KindSpec",
    "QUEUE_FULL",
    "fake_server",
    "start_fake",
    "STATES",
    "Failure",
    "FakeModel",
    "FakeServer",
    "RecordedRequest",
    "Script",
    "State",
    "ToolCall",
]

#: ``async with serve_fake(handler, host, port) as server`` — a bare HTTP server.
serve_fake = serve_http
