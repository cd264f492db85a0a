"""The headers sent to each configured model server, API key included.

Invariants:

* A key comes from ``api_key_env`` (the daemon's environment) or ``api_key_file`` (read
  afresh at start and on every reload), never from the configuration text itself.
* Neither a key nor a header value is ever logged or shown: :class:`Credentials` masks them
  in ``repr``, and a problem is described by where the key should have come from.
* A configured ``Authorization`` header wins over the key (the user wrote it on purpose).
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from routerd.core.config import ServiceConfig, ServicesConfig

__all__ = ["Credentials", "load_credentials", "load_all_credentials"]

_MAX_KEY_FILE = 64 * 1024


class Credentials:
    """Headers for one configuration entry, and what went wrong finding its key."""

    __slots__ = ("_headers", "has_key", "problem")

    def __init__(
        self, headers: Mapping[str, str], *, problem: str | None = None, has_key: bool = False
    ) -> None:
        self._headers = dict(headers)
        self.problem = problem
        self.has_key = has_key

    def headers(self) -> dict[str, str]:
        """A fresh copy of the headers to send (the caller may add to it)."""
        return dict(self._headers)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._headers))
        return f"Credentials(headers=[{names}], has_key={self.has_key}, problem={self.problem!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Credentials)
            and self._headers == other._headers
            and self.problem == other.problem
        )

    __hash__ = None  # type: ignore[assignment]


NO_CREDENTIALS = Credentials({})


async def _read_key_file(path: str) -> tuple[str | None, str | None]:
    try:
        data = await trio.Path(path).read_bytes()
    except OSError as exc:
        return None, f"cannot read the API key file {path}: {exc.strerror or type(exc).__name__}"
    if len(data) > _MAX_KEY_FILE:
        return None, f"the API key file {path} is too large to hold a key"
    key = data.decode("utf-8", "replace").strip()
    if not key:
        return None, f"the API key file {path} is empty"
    if any(c in key for c in "\r\n\0"):
        return None, f"the API key file {path} holds more than one line"
    return key, None


async def load_credentials(cfg: ServiceConfig, env: Mapping[str, str]) -> Credentials:
    """The headers for ``cfg``: its ``headers`` plus ``Authorization: Bearer <key>``."""
    headers = dict(cfg.headers)
    key: str | None = None
    problem: str | None = None
    if cfg.api_key_env is not None:
        key = (env.get(cfg.api_key_env) or "").strip() or None
        if key is None:
            problem = f"the API key variable ${cfg.api_key_env} is not set"
    elif cfg.api_key_file is not None:
        key, problem = await _read_key_file(cfg.api_key_file)
    if key is not None and not any(h.lower() == "authorization" for h in headers):
        headers["Authorization"] = f"Bearer {key}"
    return Credentials(headers, problem=problem, has_key=key is not None)


async def load_all_credentials(
    services: ServicesConfig, env: Mapping[str, str]
) -> dict[str, Credentials]:
    """Credentials per configuration key: each built-in kind, and ``custom:<name>``."""
    out: dict[str, Credentials] = {}
    for kind, cfg in services.builtin().items():
        out[kind] = await load_credentials(cfg, env)
    for ep in services.custom_endpoints:
        out[f"custom:{ep.name}"] = await load_credentials(ep, env)
    return out
