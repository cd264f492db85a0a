"""Who may use the daemon: peer admission and per-client method capabilities.

Decisions take the peer's credentials (from ``SO_PEERCRED``/``SO_PEERGROUPS``, read by the
shell) and an :class:`AccessPolicy` whose user and group names the shell has already turned
into ids.

Rules (docs/security.md, "Who may use the daemon"):

* A peer is admitted if its uid is the daemon's own, root, or in ``security.allowed_uids``, or
  if its primary or any supplementary group is in the admitted groups (``allowed_groups``;
  by default the socket's group, ``daemon.socket_group``). Unknown credentials are refused.
* ``hello`` and ``ping`` are always allowed (they reveal nothing and the handshake needs them).
* A peer matched by one or more ``security.clients`` rules may call exactly the methods their
  patterns (``fnmatch``: ``status``, ``audit.*``) allow, taken together.
* A peer matched by no rule may call every method, except the privileged ones
  (:data:`PRIVILEGED`: the audit trail and checksum runs), which only the daemon's own user
  and root may call unless a rule grants them.

Invariants: pure; every :class:`~routerd.core.egress.Decision` says why in one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from routerd.core.egress import Decision

__all__ = [
    "ALWAYS_ALLOWED",
    "PRIVILEGED",
    "AccessPolicy",
    "ClientGrant",
    "Peer",
    "admit",
    "authorize",
    "is_privileged",
]

#: Methods every admitted peer may call.
ALWAYS_ALLOWED: Final = frozenset({"hello", "ping"})
#: Methods only the daemon's user and root may call unless a ``security.clients`` rule grants
#: them: the audit trail (hashes, and query text if configured) and checksum runs (heavy I/O).
PRIVILEGED: Final = ("audit.*", "verify")


@dataclass(frozen=True, slots=True)
class Peer:
    """A connected process's credentials; ``None`` where the kernel did not say."""

    uid: int | None
    gid: int | None
    pid: int | None = None
    groups: tuple[int, ...] = ()

    def all_groups(self) -> frozenset[int]:
        gids = set(self.groups)
        if self.gid is not None:
            gids.add(self.gid)
        return frozenset(gids)


@dataclass(frozen=True, slots=True)
class ClientGrant:
    """One ``security.clients`` rule, ids resolved: who it matches and what they may call."""

    label: str  # how the rule reads in messages: "uid 1001", "user alice", "group ops"
    uids: frozenset[int]
    gids: frozenset[int]
    methods: tuple[str, ...]

    def matches(self, peer: Peer) -> bool:
        if peer.uid is not None and peer.uid in self.uids:
            return True
        return bool(self.gids & peer.all_groups())


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    owner_uid: int
    admitted_uids: frozenset[int]  # the owner and root included
    admitted_gids: frozenset[int]
    grants: tuple[ClientGrant, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        owner_uid: int,
        uids: Iterable[int] = (),
        gids: Iterable[int] = (),
        grants: Iterable[ClientGrant] = (),
    ) -> AccessPolicy:
        return cls(
            owner_uid=owner_uid,
            admitted_uids=frozenset({owner_uid, 0, *uids}),
            admitted_gids=frozenset(gids),
            grants=tuple(grants),
        )


def _who(peer: Peer) -> str:
    return f"uid {peer.uid} (gid {peer.gid}, pid {peer.pid})"


def admit(policy: AccessPolicy, peer: Peer) -> Decision:
    """May ``peer`` use the daemon at all?"""
    if peer.uid is None:
        return Decision(False, "the peer's credentials are unknown (no SO_PEERCRED)")
    if peer.uid in policy.admitted_uids:
        return Decision(True, f"uid {peer.uid} is admitted")
    shared = sorted(policy.admitted_gids & peer.all_groups())
    if shared:
        return Decision(True, f"uid {peer.uid} is in admitted group {shared[0]}")
    return Decision(
        False,
        f"{_who(peer)} may not use routerd: not the daemon's user, root, an allowed uid or a "
        "member of an allowed group (security.allowed_uids, security.allowed_groups)",
    )


def is_privileged(method: str) -> bool:
    return any(fnmatchcase(method, p) for p in PRIVILEGED)


def authorize(policy: AccessPolicy, peer: Peer, method: str) -> Decision:
    """May the admitted ``peer`` call ``method``?"""
    if method in ALWAYS_ALLOWED:
        return Decision(True, "always allowed")
    matched = [g for g in policy.grants if g.matches(peer)]
    if matched:
        for grant in matched:
            if any(fnmatchcase(method, p) for p in grant.methods):
                return Decision(True, f"granted by security.clients ({grant.label})")
        labels = ", ".join(g.label for g in matched)
        return Decision(
            False,
            f"{_who(peer)} may not call {method!r}: security.clients ({labels}) does not grant it",
        )
    if is_privileged(method) and peer.uid not in (policy.owner_uid, 0):
        return Decision(
            False,
            f"{method!r} is restricted to the daemon's user and root; grant it to "
            f"{_who(peer)} with a security.clients rule",
        )
    return Decision(True, "no security.clients rule restricts this peer")
