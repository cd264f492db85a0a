"""Exact token counts from servers that tokenize (llama-server ``/tokenize``, llama-cpp-python
``/extras/tokenize/count``).

Use it where exactness matters (``routerd.core.sessions.needs_exact_count``: an estimate near
the window's edge) and ``sessions.exact_tokenize`` is on, as ``routerd.shell.routing.fit``
does; feed what it returns to ``SessionManager.observe_tokenized`` so the estimates of that
model improve too.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from routerd.core.tokens import TokenizeDialect, parse_tokenize_response, tokenize_request

__all__ = ["exact_count"]


async def exact_count(
    client: httpx.AsyncClient,
    base_url: str,
    text: str,
    dialect: TokenizeDialect = "llama.cpp",
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> int | None:
    """Tokens of ``text`` (no special tokens) as the server at ``base_url`` counts them, or
    None when it cannot say (no such endpoint, an error, a timeout, an unexpected body).
    llama-cpp-python's count includes the BOS token for models that add one (SmolLM2 does not):
    one too many, on the safe side.
    ``client`` should be the egress-checked client (``routerd.shell.http``); ``headers`` go
    with the request (a server's API key). Never raises for the server's sake."""
    call = tokenize_request(text, dialect)
    base = base_url.rstrip("/")
    base = base.removesuffix("/v1")  # both endpoints live at the server's root
    try:
        resp = await client.post(
            base + call.path,
            content=call.body,
            headers={**(headers or {}), "content-type": "application/json"},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return parse_tokenize_response(resp.content, dialect)
