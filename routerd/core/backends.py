"""Which configured services are really one GPU server reached two ways.

Two names for one server (``localhost`` and ``127.0.0.1``, or a custom entry repeating a
built-in one), or Open WebUI in front of an Ollama routerd also sees directly: counting them
separately would double the server's limits. This module groups them.

Invariants:

* Services are merged only on evidence, never on a guess: the same canonical URL; the same
  process identity (``ServiceReport.identity``: llama.cpp's per-process ``media_marker``,
  or Ollama's version plus every weight digest); or a front (Open WebUI) all of whose
  proxied weight digests live on exactly one backend.
* Ollama exposes no process id: two Ollama processes with the same version and the same
  model store are indistinguishable and are grouped. That errs on the side of counting a
  shared GPU once.
* Grouping is transitive and its result is independent of input order: each group is named
  by its smallest non-front service name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from routerd.core.discovery import ServiceReport
from routerd.core.services import ServiceKind, canonical_base_url

__all__ = ["BackendFingerprint", "fingerprint", "group_backends"]

_FRONT_KINDS = frozenset({"openwebui"})


class BackendFingerprint(msgspec.Struct, frozen=True):
    """What can tell one server from another.

    ``url`` is canonical (see ``canonical_base_url``); ``identity`` is equal for two
    addresses of one process when the server makes that knowable; ``digests`` are the
    weights a server serves (Ollama, and Ollama models behind a front); ``front`` marks a
    proxy such as Open WebUI, whose models run on some other server.
    """

    service: str
    kind: ServiceKind
    url: str
    identity: str | None = None
    digests: frozenset[str] = frozenset()
    front: bool = False


def fingerprint(service: str, base_url: str, report: ServiceReport) -> BackendFingerprint:
    """The fingerprint of ``service`` at ``base_url`` from its latest report."""
    return BackendFingerprint(
        service=service,
        kind=report.kind,
        url=canonical_base_url(base_url),
        identity=report.identity,
        digests=frozenset(_bare(m.digest) for m in report.models if m.digest),
        front=report.kind in _FRONT_KINDS,
    )


def _bare(digest: str) -> str:
    """Digests with and without the ``sha256:`` prefix compare equal."""
    return digest.removeprefix("sha256:").lower()


class _Union:
    def __init__(self, names: Iterable[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, name: str) -> str:
        root = name
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[name] != root:
            self.parent[name], name = root, self.parent[name]
        return root

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_backends(prints: Sequence[BackendFingerprint]) -> dict[str, str]:
    """Map every service to the name of the group it belongs to (itself if alone).

    The group name is the smallest name among the group's non-front services (or among all
    of them when every member is a front).
    """
    union = _Union(p.service for p in prints)
    by_url: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for p in prints:
        if p.url in by_url:
            union.join(p.service, by_url[p.url])
        else:
            by_url[p.url] = p.service
        if p.identity is not None:
            if p.identity in by_identity:
                union.join(p.service, by_identity[p.identity])
            else:
                by_identity[p.identity] = p.service
    backends = [p for p in prints if not p.front and p.digests]
    for front in (p for p in prints if p.front and p.digests):
        holders = {union.find(b.service) for b in backends if front.digests <= b.digests}
        if len(holders) == 1:
            union.join(front.service, holders.pop())
    members: dict[str, list[BackendFingerprint]] = {}
    for p in prints:
        members.setdefault(union.find(p.service), []).append(p)
    names: dict[str, str] = {}
    for group in members.values():
        real = [p.service for p in group if not p.front] or [p.service for p in group]
        for p in group:
            names[p.service] = min(real)
    return names
