"""What a fake server knows and how a test steers it: models, state, scripts, records.

``FakeServer`` holds everything mutable; the per-kind modules only read it and answer.
Tests change ``fake.models``, ``fake.state``, ``fake.script`` between requests and read
``fake.requests``, ``fake.disconnects``, ``fake.active`` afterwards.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import trio

from fakes.http import ClientDisconnected, Exchange, HTTPServer, Request
from fakes.wire import GARBAGE

if TYPE_CHECKING:
    from fakes.kinds import KindSpec

__all__ = [
    "State",
    "STATES",
    "FakeModel",
    "ToolCall",
    "NamedFailure",
    "Failure",
    "Script",
    "RecordedRequest",
    "FakeServer",
]

#: ``ready``: normal. ``loading``: llama-server answers 503 "Loading model" everywhere;
#: other kinds hold chat/generate until ``ready`` and show the model as not loaded.
#: ``hang``: accept, read the request, never answer. ``slow``: answer after ``delay`` s.
#: ``garbage``: write non-HTTP bytes and close. ``unauthorized``: 401 with the server's real
#: body on every path that needs a key. ``error``: the server's own 500 on every path.
State = Literal["ready", "loading", "hang", "slow", "garbage", "unauthorized", "error"]
STATES: tuple[State, ...] = (
    "ready",
    "loading",
    "hang",
    "slow",
    "garbage",
    "unauthorized",
    "error",
)


@dataclass
class FakeModel:
    """One model a fake serves.

    ``context_length`` is the runtime window (Ollama ``/api/ps``, llama.cpp ``n_ctx``, vLLM
    ``max_model_len``, LM Studio's loaded instance); ``max_context_length`` the model's own
    limit (Ollama ``/api/show``, llama.cpp ``n_ctx_train``, LM Studio ``max_context_length``).
    """

    id: str
    context_length: int = 4096
    max_context_length: int | None = None
    loaded: bool = True
    size: int = 4_920_753_328
    size_vram: int | None = None
    digest: str = ""
    family: str = "llama"
    parameter_size: str = "8.0B"
    quantization: str = "Q4_K_M"
    capabilities: tuple[str, ...] = ("completion",)
    modified_at: str = "2025-05-12T10:15:04.386514121Z"
    n_params: int = 8_030_261_248
    embedding_length: int = 4096
    publisher: str = "lmstudio-community"

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = hashlib.sha256(self.id.encode()).hexdigest()
        if self.max_context_length is None:
            self.max_context_length = max(self.context_length, 8192)
        if self.size_vram is None:
            self.size_vram = self.size

    @property
    def trained_context(self) -> int:
        return self.max_context_length or self.context_length


@dataclass
class ToolCall:
    """A tool call the model makes. ``id`` defaults to ``call_<n>``."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


#: Failures with a faithful per-kind answer: ``context_overflow`` (llama-server 400
#: ``exceed_context_size_error``; llama-cpp-python 400 ``context_length_exceeded``, or an
#: empty 200 when streaming), ``server_error`` (500), ``queue_full`` (Ollama 503 "server
#: busy"), ``rate_limited`` (429), ``not_found`` (the kind's unknown-model answer).
NamedFailure = Literal["context_overflow", "server_error", "queue_full", "rate_limited"]


@dataclass
class Failure:
    """An answer given instead of a generation: ``status`` and ``body`` exactly as given
    (``headers``: the kind's JSON headers when ``None``; ``content_type``: a bare server
    answer of that type, without the kind's middleware headers)."""

    status: int
    body: bytes
    headers: Sequence[tuple[str, str]] | None = None
    content_type: str | None = None


@dataclass
class Script:
    """How the next chat/generate/completion calls answer.

    ``chunks`` are the content pieces (one SSE event / NDJSON line each); ``reasoning``
    pieces come first (Ollama ``message.thinking``, OpenAI ``reasoning_content``), then
    content, then ``tool_calls``. ``chunk_delay`` is the pause after each piece (slow drip);
    ``first_token_delay`` the pause before the first. Token counts default to an estimate
    of the prompt and to ``len(chunks)``.

    Failures: ``fail_before_first_token`` (a named failure or a ``Failure``),
    ``hang_before_first_token`` (headers sent where the real server sends them first, then
    nothing), ``fail_after_chunks=n`` (drop the connection after ``n`` pieces),
    ``end_without_done`` (end cleanly with neither finish reason nor ``[DONE]`` / ``done``),
    ``finish_reason=None`` (no finish chunk but still ``[DONE]``), ``empty_200`` (a 200
    stream with an empty body), ``garbage_stream`` (a 200 stream of junk).
    """

    chunks: Sequence[str] = ("Hello", ", ", "world", "!")
    reasoning: Sequence[str] = ()
    tool_calls: Sequence[ToolCall] = ()
    chunk_delay: float = 0.0
    first_token_delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = "stop"
    fail_before_first_token: NamedFailure | Failure | None = None
    hang_before_first_token: bool = False
    fail_after_chunks: int | None = None
    end_without_done: bool = False
    empty_200: bool = False
    garbage_stream: bool = False

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def pieces(self) -> int:
        return len(self.reasoning) + len(self.chunks) + len(self.tool_calls)

    def completion_count(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return max(1, len(self.reasoning) + len(self.chunks) + len(self.tool_calls))

    def finish(self) -> str | None:
        if self.finish_reason == "stop" and self.tool_calls:
            return "tool_calls"
        return self.finish_reason


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it; ``json`` is ``None`` when the body is not JSON."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def estimate_prompt_tokens(body: Any) -> int:
    """About four characters a token, over every string in the request's messages/prompt."""
    text = 0
    if isinstance(body, dict):
        for message in body.get("messages") or ():
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                text += len(message["content"]) + 4
        if isinstance(body.get("prompt"), str):
            text += len(body["prompt"])
    return max(1, math.ceil(text / 4))


Route = Callable[["FakeServer", Request, Exchange], Awaitable[None]]


class FakeServer:
    """One running fake of ``kind``. Create with ``fakes.start_fake``."""

    def __init__(
        self,
        spec: KindSpec,
        *,
        models: list[FakeModel] | None,
        api_key: str | None,
        clock: Callable[[], float],
        host: str,
        port: int,
        options: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.kind = spec.name
        self.models: list[FakeModel] = spec.default_models() if models is None else models
        self.api_key = api_key
        self.clock = clock
        self.options = options
        self.version: str = options.get("version", spec.version)
        self.instance_id: str = options.get("instance_id", "fake-routerd-1")
        self.total_slots: int = options.get("slots", 4)
        self.interrupt_requests: bool = options.get("interrupt_requests", False)
        self.delay = 0.0
        self.script = Script()
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.active = 0
        self.completed = 0
        self.started_at = clock()
        self.http = HTTPServer(self.handle, host, port)
        self._state: State = "ready"
        self._scripts: deque[Script] = deque()
        self._changed = trio.Event()
        self._epoch = 0

    # --- what tests steer --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.http.base_url

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        if value not in STATES:
            raise ValueError(f"unknown state {value!r}; one of {STATES}")
        self._state = value
        self._bump()

    async def down(self) -> None:
        """Stop listening and drop every connection: connects are refused until ``up``."""
        await self.http.down()

    async def up(self) -> None:
        """Listen again on the same port."""
        await self.http.up()

    def push_script(self, *scripts: Script) -> None:
        """Scripts for the next calls, one each, before falling back to ``script``."""
        self._scripts.extend(scripts)

    def next_script(self) -> Script:
        return self._scripts.popleft() if self._scripts else self.script

    def model(self, model_id: str | None) -> FakeModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested so far, in order (optionally only those of ``method``)."""
        return [r.path for r in self.requests if method is None or r.method == method]

    def last(self, path: str) -> RecordedRequest:
        """The most recent request to ``path``."""
        for rec in reversed(self.requests):
            if rec.path == path:
                return rec
        raise LookupError(f"no request to {path} (got {self.paths()})")

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever the fake's counters move)."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    # --- used by the kind modules ------------------------------------------------------------

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def now(self) -> float:
        return self.clock()

    @contextmanager
    def generating(self) -> Iterator[int]:
        """Count one generation: ``active`` while it runs, ``disconnects`` if the client
        leaves before the end, ``completed`` when it ends. Yields its epoch (see
        ``interrupted``)."""
        self.active += 1
        self._epoch += 1
        epoch = self._epoch
        self._bump()
        try:
            yield epoch
        except ClientDisconnected:
            self.disconnects += 1
            raise
        else:
            self.completed += 1
        finally:
            self.active -= 1
            self._bump()

    def interrupted(self, epoch: int) -> bool:
        """llama-cpp-python's default: a newer request aborts the stream in progress."""
        return self.interrupt_requests and epoch != self._epoch

    async def until_ready(self, ex: Exchange) -> None:
        """Hold a generation while ``state`` is ``loading`` (the model is being loaded)."""
        while self._state == "loading":
            changed = self._changed
            async with trio.open_nursery() as nursery:

                async def wake(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wake, changed)
                nursery.start_soon(wake, ex.client_gone)
            if ex.client_gone.is_set():
                raise ClientDisconnected("client went away while the model loaded")

    def authorized(self, request: Request) -> bool:
        if request.path in self.spec.public_paths:
            return True
        if self._state == "unauthorized":
            return False
        return self.api_key is None or request.bearer == self.api_key

    # --- the HTTP handler --------------------------------------------------------------------

    async def handle(self, request: Request, ex: Exchange) -> None:
        try:
            parsed: Any = request.json() if request.body else None
        except ValueError:
            parsed = None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.query,
                dict(request.headers),
                request.body,
                parsed,
            )
        )
        self._bump()
        state = self._state
        spec = self.spec
        if state == "garbage":
            await ex.send_raw(GARBAGE)
            return
        if state == "hang":
            await ex.hang()
        if state == "slow":
            await ex.pause(self.delay)
        if state == "error":
            await spec.server_error(self, request, ex)
            return
        if state == "loading" and spec.loading_everywhere is not None:
            await spec.loading_everywhere(self, request, ex)
            return
        if not self.authorized(request):
            await spec.unauthorized(self, request, ex)
            return
        route = spec.routes.get((request.method, request.path))
        if route is None and request.method == "HEAD":
            route = spec.routes.get(("GET", request.path))
        await (route or spec.not_found)(self, request, ex)
