"""One probe request: an HTTP answer, or a failure named in routerd's own terms.

Invariants:

* ``fetch`` never raises for anything the server or the network does (only ``trio.Cancelled``
  leaves it): httpx's exceptions are translated here and nowhere else in discovery.
* Every request has its own deadline (``timeout``, measured on trio's clock over the whole
  exchange, body included), so a server that trickles bytes cannot hold a probe.
* Bodies are read up to ``limit`` bytes; what is beyond is dropped (the parser then sees a
  truncated body and says so). Redirects are never followed.
* An egress refusal is its own failure (``egress``), never mistaken for a server that is down.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Final, Literal, cast

import httpx
import msgspec
import trio

from routerd.core.identify import ProbeResponse
from routerd.shell.http import EgressRefused

__all__ = ["FailureKind", "Failure", "Fetched", "fetch", "BODY_LIMIT"]

#: Largest probe answer read, in bytes (a model list of hundreds of entries is ~100 KiB).
BODY_LIMIT: Final = 8 * 1024 * 1024

#: ``refused``: no connection (nothing listens, or it went away); ``timeout``: no whole answer
#: in time; ``protocol``: something answered that does not speak HTTP; ``egress``: the policy
#: forbids the address (nothing was sent).
FailureKind = Literal["refused", "timeout", "protocol", "egress"]


class Failure(msgspec.Struct, frozen=True):
    """A request that got no HTTP answer, and why (one line)."""

    kind: FailureKind
    detail: str


class Fetched(msgspec.Struct, frozen=True):
    """The outcome of one request; ``elapsed`` is seconds from sending to the whole body."""

    answer: ProbeResponse | Failure
    elapsed: float


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _connect_detail(exc: BaseException) -> str:
    """``connection refused`` when that is what happened (trio wraps the OS errors of each
    address tried in an ExceptionGroup under a generic message), else the first line."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or "connection refused" in str(cur).lower():
            return "connection refused"
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        todo.extend(e for e in (cur.__cause__, cur.__context__) if e is not None)
    return _describe(exc)


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit: int = BODY_LIMIT,
) -> Fetched:
    """Send one request and read its answer within ``timeout`` seconds."""
    start = trio.current_time()
    answer: ProbeResponse | Failure = Failure("timeout", f"no answer within {timeout:g} s")
    with trio.move_on_after(timeout):
        answer = await _exchange(client, url, method, body, headers, timeout, limit)
    return Fetched(answer, trio.current_time() - start)


async def _exchange(
    client: httpx.AsyncClient,
    url: str,
    method: str,
    body: bytes | None,
    headers: dict[str, str] | None,
    timeout: float,
    limit: int,
) -> ProbeResponse | Failure:
    try:
        async with client.stream(
            method, url, content=body, headers=headers, timeout=timeout
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            # aclosing: leaving early (the limit, a timeout) must close the generator here,
            # not leave it to the garbage collector outside trio.
            gen = cast(AsyncGenerator[bytes, None], resp.aiter_bytes())  # it is a generator
            async with aclosing(gen) as body_chunks:
                async for chunk in body_chunks:
                    chunks.append(chunk[: limit - size])
                    size += len(chunk)
                    if size >= limit:
                        break
            return ProbeResponse(resp.status_code, dict(resp.headers), b"".join(chunks))
    except EgressRefused as exc:
        return Failure("egress", exc.reason)
    except httpx.TimeoutException:
        return Failure("timeout", f"no answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        return Failure("refused", _connect_detail(exc))
    except (httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.DecodingError) as exc:
        return Failure("protocol", f"not an HTTP answer ({_describe(exc)})")
    except (httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
        return Failure("refused", f"connection broken ({_describe(exc)})")
    except httpx.TransportError as exc:
        return Failure("refused", _describe(exc))
