"""Peer admission and method capabilities, carried out (decisions: ``routerd.core.access``).

The server asks :meth:`AccessControl.admit` for every accepted connection, before reading a
byte from it: the peer's uid/gid/pid come from ``SO_PEERCRED`` and its supplementary groups
from ``SO_PEERGROUPS`` (Linux 4.13+; without it only the primary group counts). A refused peer
gets one ``error`` frame ``forbidden`` (id nil) and is closed, and a ``security:refused_peer``
event is recorded. Each request then goes through :meth:`AccessControl.authorize`; a method the
peer may not call is answered ``forbidden`` and recorded as ``security:forbidden_method``.

User and group names in the configuration are looked up (``pwd``/``grp``) when the policy is
built: at start and on each reload. An unknown name is logged and ignored (it admits nobody).

POSIX only: on Windows the security feature installs no access control (the named pipe's
security descriptor admits only the daemon's own user), and the configuration file may not
name users or groups there (``routerd.shell.config_file``).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

from routerd.core.access import AccessPolicy, ClientGrant, Peer, admit, authorize, is_privileged
from routerd.core.config import Config

from .dispatch import ConnectionInfo
from .osdeps import SELF_UID, effective_uid, group_id, user_id

if TYPE_CHECKING:
    from .app import App

__all__ = ["AccessControl", "SO_PEERGROUPS", "build_policy", "read_peer"]

log = logging.getLogger(__name__)

#: Linux's socket option for the peer's supplementary groups (not in Python's socket module).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MAX_GROUPS = 65536


def read_peer(sock: Any) -> Peer:
    """The credentials of the process at the other end of the Unix socket ``sock``."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return Peer(None, None)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return Peer(None, None)
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(uid=uid, gid=gid, pid=pid, groups=_peer_groups(sock))


def _peer_groups(sock: Any) -> tuple[int, ...]:
    size = 4 * 64
    while size <= 4 * _MAX_GROUPS:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == 34 and size < 4 * _MAX_GROUPS:  # ERANGE: a bigger buffer
                size *= 4
                continue
            return ()
        count = len(raw) // 4
        return tuple(struct.unpack(f"{count}I", raw[: count * 4]))
    return ()


def _uid_of(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    uid = user_id(user)
    if uid is None:
        log.warning("security.clients: no user %r on this machine; the rule matches nobody", user)
    return uid


def _gid_of(group: str, where: str) -> int | None:
    if group.isdigit():
        return int(group)
    gid = group_id(group)
    if gid is None:
        log.warning("%s: no group %r on this machine; it admits nobody", where, group)
    return gid


def build_policy(config: Config, *, owner_uid: int, socket_gid: int | None) -> AccessPolicy:
    """The access policy ``config`` describes, names resolved to ids."""
    s = config.security
    if s.allowed_groups:
        gids = [_gid_of(g, "security.allowed_groups") for g in s.allowed_groups]
    else:
        gids = [socket_gid]
    grants: list[ClientGrant] = []
    for rule in s.clients:
        uids: set[int] = set()
        rule_gids: set[int] = set()
        if rule.uid is not None:
            label = f"uid {rule.uid}"
            uids.add(rule.uid)
        elif rule.user is not None:
            label = f"user {rule.user}"
            uid = _uid_of(rule.user)
            if uid is not None:
                uids.add(uid)
        else:
            label = f"group {rule.group}"
            gid = _gid_of(rule.group or "", "security.clients")
            if gid is not None:
                rule_gids.add(gid)
        grants.append(
            ClientGrant(label, frozenset(uids), frozenset(rule_gids), tuple(rule.methods))
        )
    return AccessPolicy.build(
        owner_uid=owner_uid,
        uids=s.allowed_uids,
        gids=[g for g in gids if g is not None],
        grants=grants,
    )


class AccessControl:
    """The hook the server and connections call (``app.access``)."""

    def __init__(self, app: App, *, owner_uid: int | None = None) -> None:
        owner = effective_uid() if owner_uid is None else owner_uid
        if owner == SELF_UID:  # Windows: the pipe's security descriptor is the admission check
            raise RuntimeError("peer admission needs Unix credentials")
        self._app = app
        self._owner = owner
        self._policy: AccessPolicy | None = None
        self.refused_peers = 0
        self.forbidden_calls = 0

    @property
    def policy(self) -> AccessPolicy:
        if self._policy is None:
            self._policy = build_policy(
                self._app.config, owner_uid=self._owner, socket_gid=self._socket_gid()
            )
        return self._policy

    def _socket_gid(self) -> int | None:
        path = self._app.socket_path
        if not path:
            return None
        try:
            return os.stat(path).st_gid
        except OSError:
            return None

    def reload(self, old: Config, new: Config) -> None:
        """Reload hook: rebuild the policy from the new configuration."""
        self._policy = None

    def admit(self, info: ConnectionInfo, sock: Any) -> str | None:
        """Fill ``info``'s peer fields; return why the peer is refused, or None to serve it."""
        peer = read_peer(sock)
        info.peer_pid, info.peer_uid, info.peer_gid = peer.pid, peer.uid, peer.gid
        info.peer_groups = peer.groups
        verdict = admit(self.policy, peer)
        if verdict.allowed:
            return None
        self.refused_peers += 1
        self._app.audit.security(
            "refused_peer", verdict.reason, uid=peer.uid, gid=peer.gid, pid=peer.pid
        )
        return verdict.reason

    def authorize(self, info: ConnectionInfo, method: str) -> str | None:
        """Why ``info``'s peer may not call ``method``, or None if it may."""
        policy = self.policy
        if not policy.grants and not is_privileged(method):
            return None  # the common case, without building a Peer
        peer = Peer(info.peer_uid, info.peer_gid, info.peer_pid, info.peer_groups)
        verdict = authorize(policy, peer, method)
        if verdict.allowed:
            return None
        self.forbidden_calls += 1
        agent = info.agent.name if info.agent is not None else None
        self._app.audit.security(
            "forbidden_method", verdict.reason, uid=peer.uid, pid=peer.pid, agent=agent,
            method=method,
        )  # fmt: skip
        return verdict.reason

    def status(self) -> dict[str, Any]:
        p = self.policy
        return {
            "admitted_uids": sorted(p.admitted_uids),
            "admitted_gids": sorted(p.admitted_gids),
            "client_rules": len(p.grants),
            "refused_peers": self.refused_peers,
            "forbidden_calls": self.forbidden_calls,
        }
