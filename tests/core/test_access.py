"""Peer admission and per-client method capabilities (pure)."""

from __future__ import annotations

from routerd.core.access import AccessPolicy, ClientGrant, Peer, admit, authorize

OWNER = 1000
POLICY = AccessPolicy.build(owner_uid=OWNER, uids=[1500], gids=[200])


def test_admits_owner_root_listed_uid_and_group_members() -> None:
    assert admit(POLICY, Peer(OWNER, 1000)).allowed
    assert admit(POLICY, Peer(0, 0)).allowed
    assert admit(POLICY, Peer(1500, 1500)).allowed
    assert admit(POLICY, Peer(2000, 200)).allowed  # primary group
    assert admit(POLICY, Peer(2001, 2001, groups=(5, 200))).allowed  # supplementary group


def test_refuses_others_and_unknown_credentials() -> None:
    d = admit(POLICY, Peer(65534, 65534, pid=77))
    assert not d.allowed and "uid 65534" in d.reason and "pid 77" in d.reason
    assert not admit(POLICY, Peer(None, None)).allowed


def test_no_rule_means_everything_but_privileged_methods() -> None:
    member = Peer(2000, 200)
    assert authorize(POLICY, member, "ask").allowed
    assert authorize(POLICY, member, "status").allowed
    for method in ("audit.tail", "audit.verify", "verify"):
        d = authorize(POLICY, member, method)
        assert not d.allowed and "security.clients" in d.reason
        assert authorize(POLICY, Peer(OWNER, 1), method).allowed
        assert authorize(POLICY, Peer(0, 0), method).allowed


def test_rules_restrict_and_grant() -> None:
    readonly = ClientGrant("group ops", frozenset(), frozenset({300}), ("status", "audit.*"))
    policy = AccessPolicy.build(owner_uid=OWNER, gids=[300], grants=[readonly])
    operator = Peer(3000, 3000, groups=(300,))
    assert authorize(policy, operator, "status").allowed
    assert authorize(policy, operator, "audit.tail").allowed  # granted although privileged
    assert (
        authorize(policy, operator, "hello").allowed and authorize(policy, operator, "ping").allowed
    )
    d = authorize(policy, operator, "ask")
    assert not d.allowed and "group ops" in d.reason
    # A peer no rule matches is not restricted by it.
    assert authorize(policy, Peer(OWNER, 1000), "ask").allowed


def test_rules_combine() -> None:
    a = ClientGrant("uid 5", frozenset({5}), frozenset(), ("status",))
    b = ClientGrant("group 9", frozenset(), frozenset({9}), ("models.*",))
    policy = AccessPolicy.build(owner_uid=OWNER, grants=[a, b])
    peer = Peer(5, 9)
    assert authorize(policy, peer, "status").allowed
    assert authorize(policy, peer, "models.list").allowed
    assert not authorize(policy, peer, "ask").allowed
