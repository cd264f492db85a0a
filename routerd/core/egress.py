"""The egress policy: which hosts and addresses routerd may open a connection to.

Rules (docs/security.md, "Egress"):

* ``security.allow_external = true`` allows everything; nothing below applies.
* A **name** is a permission to ask DNS; an **address** is a permission to connect. A host
  name not written in ``security.allowed_hosts`` is refused *without* being resolved (a DNS
  query for it could itself leak). A name that is listed is resolved, and then every address
  it resolves to must itself be allowed, or the connection is refused.
* An address is allowed if it lies in an allowed network: ``security.allowed_cidrs``, CIDRs
  written inside ``allowed_hosts`` (as the seed design does), and literal IPs in
  ``allowed_hosts`` (as /32 or /128).
* ``localhost`` and names under ``.localhost`` are loopback by definition (RFC 6761 §6.3):
  they map to ``127.0.0.1`` and ``::1`` without a DNS query, and those addresses are then
  checked like any other (so removing the loopback networks refuses them).
* An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is checked as the IPv4 address it carries;
  an IPv6 zone (``fe80::1%eth0``) is ignored for the check.

Invariants: pure (no resolution, no I/O); host names compare case-insensitively and without a
trailing dot; every :class:`Decision` carries a one-line reason fit for a log or an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    from routerd.core.config import SecurityConfig

__all__ = [
    "LOOPBACK_ADDRESSES",
    "Decision",
    "EgressPolicy",
    "IPAddress",
    "IPNetwork",
    "check_address",
    "check_host",
    "check_resolved",
    "check_url",
    "is_loopback_name",
    "literal_address",
    "normalize_host",
    "policy_from_config",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What ``localhost`` means, in the order connections are tried.
LOOPBACK_ADDRESSES: Final = ("127.0.0.1", "::1")


class Decision(msgspec.Struct, frozen=True):
    """The answer to "may routerd connect there?" and why, in one line."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The allowlist in force. Build it with :func:`policy_from_config`.

    ``names`` are normalized host names (lower case, no trailing dot); ``networks`` holds the
    allowed networks (literal IPs become /32 or /128), parsed once.
    """

    allow_external: bool = False
    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()


def normalize_host(host: str) -> str:
    """``host`` lower-cased, without brackets around an IPv6 literal or a trailing dot."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    return host.lower()


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells literally (zone and brackets ignored), or None."""
    text = normalize_host(host).split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_loopback_name(host: str) -> bool:
    """True for ``localhost`` and names under ``.localhost`` (RFC 6761 §6.3)."""
    name = normalize_host(host)
    return name == "localhost" or name.endswith(".localhost")


def policy_from_config(security: SecurityConfig) -> EgressPolicy:
    """The policy that ``security`` describes.

    ``allowed_hosts`` may hold names, literal IPs and CIDRs; ``allowed_cidrs`` holds CIDRs.
    Values are assumed valid (``config_checks`` has vetted them); a CIDR with host bits set is
    taken as its network.
    """
    names: set[str] = set()
    nets: list[IPNetwork] = []
    for entry in security.allowed_hosts:
        if "/" in entry:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            continue
        addr = literal_address(entry)
        if addr is not None:
            nets.append(ipaddress.ip_network(_unmapped(addr)))
        else:
            names.add(normalize_host(entry))
    nets.extend(ipaddress.ip_network(c.strip(), strict=False) for c in security.allowed_cidrs)
    return EgressPolicy(
        allow_external=security.allow_external,
        names=frozenset(names),
        networks=tuple(dict.fromkeys(nets)),
    )


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


def check_address(policy: EgressPolicy, ip: IPAddress | str) -> Decision:
    """May routerd connect to the address ``ip``?"""
    if isinstance(ip, str):
        parsed = literal_address(ip)
        if parsed is None:
            return Decision(False, f"{ip!r} is not an IP address")
        ip = parsed
    if policy.allow_external:
        return Decision(True, "security.allow_external is true")
    addr = _unmapped(ip)
    for net in policy.networks:
        if addr.version == net.version and addr in net:
            return Decision(True, f"{addr} is in the allowed network {net}")
    return Decision(False, f"{addr} is not in any allowed network")


def check_host(policy: EgressPolicy, host: str) -> Decision:
    """May routerd use ``host`` (a name or a literal IP) at all?

    For a literal IP this is the final answer. For a name, ``allowed`` means "it may be
    resolved"; the addresses it resolves to must then pass :func:`check_resolved`.
    """
    if policy.allow_external:
        return Decision(True, "security.allow_external is true")
    addr = literal_address(host)
    if addr is not None:
        return check_address(policy, addr)
    name = normalize_host(host)
    if not name:
        return Decision(False, "empty host name")
    if is_loopback_name(name):
        refused = [a for a in LOOPBACK_ADDRESSES if not check_address(policy, a).allowed]
        if len(refused) == len(LOOPBACK_ADDRESSES):
            return Decision(False, f"{name} is loopback, but no loopback network is allowed")
        return Decision(True, f"{name} is loopback")
    if name in policy.names:
        return Decision(True, f"{name} is in security.allowed_hosts")
    return Decision(False, f"host name {name!r} is not in security.allowed_hosts, so not resolved")


def check_resolved(
    policy: EgressPolicy, host: str, addresses: Iterable[IPAddress | str]
) -> Decision:
    """May routerd connect to ``host`` given what it resolved to? Every address must pass.

    An empty resolution is refused (nothing to connect to). A single refused address refuses
    the host: a name that points outside the allowlist even once is treated as compromised.
    """
    first = check_host(policy, host)
    if not first.allowed:
        return first
    seen: list[str] = []
    for a in addresses:
        d = check_address(policy, a)
        if not d.allowed:
            return Decision(False, f"{normalize_host(host)} resolved to {a}: {d.reason}")
        seen.append(str(a))
    if not seen:
        return Decision(False, f"{normalize_host(host)} resolved to no address")
    return Decision(True, f"{normalize_host(host)} resolved to {', '.join(seen)}: all allowed")


def check_url(policy: EgressPolicy, url: str) -> Decision:
    """:func:`check_host` for the host of ``url`` (a URL without a host is refused)."""
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        return Decision(False, f"invalid URL {url!r}: {exc}")
    if not host:
        return Decision(False, f"URL {url!r} has no host")
    return check_host(policy, host)


def loopback_candidates(policy: EgressPolicy) -> Sequence[str]:
    """The loopback addresses ``localhost`` may connect to under ``policy``, in order."""
    return [a for a in LOOPBACK_ADDRESSES if check_address(policy, a).allowed]
