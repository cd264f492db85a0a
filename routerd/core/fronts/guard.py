"""Who may use the HTTP fronts: listen addresses, bearer tokens, ``Host`` and ``Origin``.

A loopback TCP port is reachable by every local user and, through DNS rebinding, by any web
page a local browser opens. So, on TCP:

* ``Host`` must name this machine's loopback: ``localhost`` (or a name under
  ``.localhost``), a loopback IP literal, a listen address's host, or one of
  ``http.allowed_hosts``. A rebinding page's requests carry the attacker's name, and fail.
* ``Origin``, when a browser sends one, must be the front itself (``http://<Host>``) or one
  of ``http.allowed_origins``; ``null`` never is.
* With ``http.require_token`` (the default) the request must carry
  ``Authorization: Bearer <token>`` with a token from the token file.

On the Unix socket only the file mode guards (no browser can reach it): a token is accepted
and identifies the caller, but is not required, and ``Host``/``Origin`` are not checked.

Invariants: pure; tokens compare in constant time (``hmac.compare_digest``) against every
token; each refusal carries an HTTP status, a kind for the audit (``missing_token``,
``bad_token``, ``bad_host``, ``bad_origin``) and a one-line reason that never echoes a token.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

import msgspec

from routerd.core.egress import is_loopback_name, literal_address, normalize_host

if TYPE_CHECKING:
    from routerd.core.config import HttpConfig

__all__ = [
    "Admission",
    "Guard",
    "ListenAddress",
    "Transport",
    "admit_request",
    "guard_from",
    "host_of",
    "http_problem",
    "parse_listen",
    "parse_tokens",
]

Transport = Literal["tcp", "unix"]

_SUN_PATH_MAX: Final = 107
_TOKEN: Final = re.compile(r"[\x21-\x7e]{16,512}\Z")  # visible ASCII, no spaces
_HOST_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed ``http.listen`` entry. ``host`` is normalized (no brackets); ``bind_host`` is
    what to bind (``localhost`` binds 127.0.0.1)."""

    host: str
    port: int

    @property
    def bind_host(self) -> str:
        return "127.0.0.1" if is_loopback_name(self.host) else self.host

    @property
    def family_v6(self) -> bool:
        return ":" in self.bind_host


def parse_listen(text: str) -> ListenAddress | str:
    """``host:port`` (``[v6]:port`` for IPv6) as a loopback :class:`ListenAddress`, or why
    it is not one. Port 0 means "any free port"."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return f"{text!r} is not [address]:port"
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            return f"{text!r} is not host:port (write IPv6 as [::1]:port)"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return f"{text!r} has no valid port (0-65535)"
    host = normalize_host(host)
    ip = literal_address(host)
    if not (is_loopback_name(host) or (ip is not None and ip.is_loopback)):
        return (
            f"{text!r} is not a loopback address: the HTTP fronts listen on 127.0.0.1, ::1 or "
            "localhost only (reach them from elsewhere through an SSH tunnel)"
        )
    return ListenAddress(host, int(port_text))


def parse_tokens(text: str) -> tuple[str, ...]:
    """The tokens of a token file: one a line; blank lines and ``#`` comments are skipped;
    a line that is not a token (spaces inside, under 16 or over 512 characters) is skipped
    too, so a stray word can never become a weak password."""
    out: list[str] = []
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#") and _TOKEN.match(token) and token not in out:
            out.append(token)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the fronts check, built by :func:`guard_from` from the configuration in force."""

    tokens: tuple[str, ...]
    require_token: bool
    hosts: frozenset[str]  # normalized names and literal IPs
    origins: frozenset[str]  # normalized scheme://host[:port]


def _origin_key(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, default port dropped; None if not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = normalize_host(parts.hostname)
    if ":" in host:
        host = f"[{host}]"
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def guard_from(http: HttpConfig, tokens: Sequence[str]) -> Guard:
    """The guard for ``http`` (a validated section) with the token file's ``tokens``."""
    hosts = {"localhost"}
    for entry in http.listen:
        parsed = parse_listen(entry)
        if isinstance(parsed, ListenAddress):
            hosts.add(parsed.host)
    hosts.update(normalize_host(h) for h in http.allowed_hosts)
    origins = {key for o in http.allowed_origins if (key := _origin_key(o)) is not None}
    return Guard(tuple(tokens), http.require_token, frozenset(hosts), frozenset(origins))


def host_of(header: str) -> str | None:
    """The host part of a ``Host`` header (port, brackets and case removed), or None."""
    text = header.strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return normalize_host(text[: end + 1])
    host, sep, port = text.rpartition(":")
    if sep and ":" not in host and port.isdigit():
        text = host
    elif sep and ":" in host:
        return None  # an unbracketed IPv6 literal is not a valid Host
    return normalize_host(text)


class Admission(msgspec.Struct, frozen=True):
    """The verdict on one request. ``token`` is the index of the token it carried (its
    identity); ``cors`` is the origin to allow in the answer's CORS headers."""

    allowed: bool
    status: int = 200
    kind: str = ""
    reason: str = ""
    token: int | None = None
    cors: str | None = None


def _host_allowed(guard: Guard, host: str) -> bool:
    if host in guard.hosts or is_loopback_name(host):
        return True
    ip = literal_address(host)
    return ip is not None and ip.is_loopback


def _token_index(tokens: Iterable[str], offered: str) -> int | None:
    found: int | None = None
    given = offered.encode("utf-8", "replace")
    for i, token in enumerate(tokens):
        # Compare with every token (no early exit), each in constant time.
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = i
    return found


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def admit_request(
    guard: Guard,
    *,
    transport: Transport,
    host: str | None,
    origin: str | None,
    authorization: str | None,
) -> Admission:
    """Whether to serve a request with these headers (see the module docstring)."""
    cors: str | None = None
    if transport == "tcp":
        name = host_of(host) if host is not None else None
        if name is None or not _host_allowed(guard, name):
            shown = (host or "").strip()[:80] or "(none)"
            return Admission(
                False, 403, "bad_host",
                f"Host {shown!r} is not this machine's loopback; add it to http.allowed_hosts "
                "if it should be",
            )  # fmt: skip
        if origin is not None:
            key = _origin_key(origin)
            same = key is not None and host is not None and key == _origin_key(f"http://{host}")
            if key is None or not (same or key in guard.origins):
                return Admission(
                    False, 403, "bad_origin",
                    f"Origin {origin.strip()[:80]!r} may not use routerd; add it to "
                    "http.allowed_origins if it should",
                )  # fmt: skip
            cors = None if same else key
    offered = _bearer(authorization)
    index = _token_index(guard.tokens, offered) if offered is not None else None
    if transport == "tcp" and guard.require_token:
        if offered is None:
            reason = (
                "missing bearer token (Authorization: Bearer <token>; the token file is "
                "http.token_file)"
                if authorization is None
                else "the Authorization header is not 'Bearer <token>'"
            )
            return Admission(False, 401, "missing_token", reason)
        if index is None:
            return Admission(False, 401, "bad_token", "the bearer token is not a valid token")
    return Admission(True, token=index, cors=cors)


def http_problem(http: HttpConfig) -> tuple[tuple[str | int, ...], str] | None:
    """The first problem of the ``http`` section as (path under ``http``, message)."""
    seen: set[tuple[str, int]] = set()
    for i, entry in enumerate(http.listen):
        parsed = parse_listen(entry)
        if isinstance(parsed, str):
            return ("listen", i), parsed
        key = (parsed.bind_host, parsed.port)
        if parsed.port and key in seen:
            return ("listen", i), f"{entry!r} is listed twice"
        seen.add(key)
    path = http.unix_socket
    if path is not None:
        if not path.strip() or "\0" in path:
            return ("unix_socket",), "must be a path"
        if len(path.encode()) > _SUN_PATH_MAX:
            return ("unix_socket",), f"longer than {_SUN_PATH_MAX} bytes, the Unix socket limit"
    if http.enabled and not http.listen and path is None:
        return ("listen",), "nothing to listen on: give listen addresses or unix_socket"
    if http.token_file is not None and not http.token_file.strip():
        return ("token_file",), "must be a path"
    for i, h in enumerate(http.allowed_hosts):
        name = normalize_host(h)
        if literal_address(name) is None and not _HOST_NAME.match(name):
            return ("allowed_hosts", i), f"{h!r} is not a host name or IP address"
    for i, o in enumerate(http.allowed_origins):
        if _origin_key(o) is None:
            return ("allowed_origins", i), f"{o!r} is not an origin such as http://localhost:3000"
    return None
