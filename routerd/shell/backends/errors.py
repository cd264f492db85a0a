"""httpx's exceptions, translated at this edge into routerd's failure kinds.

Only this module and ``chat`` see httpx exceptions; what leaves the backends package is a
:class:`~routerd.core.streams.StreamError` value. The tree translated::

    EgressRefused (routerd.shell.http)   -> egress_refused   (nothing was sent)
    httpx.ConnectTimeout, PoolTimeout    -> timeout_connect
    httpx.WriteTimeout, ReadTimeout      -> timeout_first_token (the server is not reading our
                                            request, or not answering it)
    httpx.ConnectError                   -> refused          (refused, unreachable, no DNS)
    httpx.UnsupportedProtocol, InvalidURL-> refused          (a target URL we cannot reach)
    httpx.ProtocolError                  -> bad_response     (not HTTP, or HTTP gone wrong)
    other httpx.RequestError             -> refused before an answer; after it, the
                                            decoder's verdict (truncated, ...) says what broke

``trio.Cancelled`` is never translated: cancellation always propagates.
"""

from __future__ import annotations

import httpx

from routerd.core.streams import StreamError
from routerd.shell.http import EgressRefused

__all__ = ["before_answer"]


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def before_answer(exc: httpx.RequestError | httpx.InvalidURL, url: str) -> StreamError:
    """The failure for ``exc`` raised while connecting or sending, before any answer."""
    what = _describe(exc)
    if isinstance(exc, EgressRefused):
        return StreamError("egress_refused", what)
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return StreamError("timeout_connect", f"connecting to {url} timed out")
    if isinstance(exc, httpx.TimeoutException):
        return StreamError("timeout_first_token", f"{url} stopped reading or answering: {what}")
    if isinstance(exc, httpx.ConnectError):
        return StreamError("refused", f"cannot connect to {url}: {what}")
    if isinstance(exc, httpx.ProtocolError):
        return StreamError("bad_response", f"{url} did not answer in HTTP: {what}")
    return StreamError("refused", f"{url}: {what}")
