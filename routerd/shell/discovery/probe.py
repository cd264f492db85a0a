"""One probe of one address: the HTTP requests, and what the core makes of their answers.

A probe is *full* (discovery: every path that tells the candidates apart, then the identified
kind's whole plan and its per-model requests) or a *cycle* (only the kind's ``each_cycle``
paths, laid over the answers of the last full probe, so what a cycle does not fetch, such as
KoboldCpp's context size, is still known).

Invariants:

* All requests of one step run in parallel, each with its own timeout; a probe never raises
  for anything a server does.
* A cycle that finds another kind answering, or a different set of models, turns into a full
  probe at once: a new model's context length is never left to the next refresh.
* An address that was offline is first asked one path; the rest only if that one answers.
* Decisions (identity, readiness, models, health input) are the core's: this module only
  carries answers to ``identify``, ``assemble`` and ``probe_input``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import trio

from routerd.core.discovery import (
    PerModelRequest,
    ServiceReport,
    assemble,
    per_model_requests,
    probe_input,
    show_key,
)
from routerd.core.health import HealthInput
from routerd.core.identify import Identification, ProbeResponse, identify
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.services import ProbeStep, ServiceKind, cycle_plan
from routerd.core.targets import ProbeTarget, discovery_plan

from .fetch import Failure, Fetched, fetch

__all__ = ["ProbeResult", "ShowCache", "Prober"]

#: Per-model answers kept between probes: key -> (the model's digest then, the answer).
ShowCache = dict[str, tuple[str | None, ProbeResponse]]

# Ollama's /api/show for a long model list: a few at a time, not hundreds at once.
_PER_MODEL_CONCURRENCY = 4


@dataclass
class ProbeResult:
    """What one probe found. ``input`` and ``detail`` feed the health machine.

    ``kind`` is what answered (``None``: nothing said); ``report`` is set when a ready server
    was read; ``answers`` are the answers to keep for later cycles (only when something
    answered); ``blocked`` is the egress policy's reason when it refused the address.
    """

    input: HealthInput
    detail: str
    full: bool
    kind: ServiceKind | None = None
    version: str | None = None
    report: ServiceReport | None = None
    answers: dict[str, ProbeResponse] | None = None
    shows: ShowCache = field(default_factory=dict)
    latency: float | None = None
    error: str | None = None
    blocked: str | None = None


@dataclass
class PriorState:
    """What the prober needs to know of the address's last probes."""

    kind: ServiceKind | None = None
    offline: bool = False
    answers: Mapping[str, ProbeResponse] = field(default_factory=dict)
    shows: ShowCache = field(default_factory=dict)
    model_ids: frozenset[str] = frozenset()


class Prober:
    """Runs probes with one HTTP client. ``own_instance_id`` tells routerd itself apart."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout: float,
        own_instance_id: str | None,
        base_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.own_instance_id = own_instance_id
        self.base_headers = dict(base_headers or {"Accept": "application/json"})

    async def probe(
        self,
        target: ProbeTarget,
        prior: PriorState,
        headers: Mapping[str, str],
        *,
        full: bool,
    ) -> ProbeResult:
        """Probe ``target`` once (``full``: discovery; else a cycle of ``prior.kind``)."""
        cycle_kind = None if full else prior.kind
        full = cycle_kind is None
        send = {**self.base_headers, **headers}
        plan = discovery_plan(target) if cycle_kind is None else cycle_plan(cycle_kind)
        got: dict[str, Fetched] = {}
        if prior.offline and len(plan) > 1:
            got.update(await self._get_all(target, plan[:1], send))
            if not _responses(got):
                return _failed(got, full)
            plan = plan[1:]
        got.update(await self._get_all(target, plan, send))
        responses = _responses(got)
        if not responses:
            return _failed(got, full)
        candidates = target.candidates if cycle_kind is None else (cycle_kind,)
        ident = identify(responses, candidates=candidates, own_instance_id=self.own_instance_id)
        if cycle_kind is not None and ident.kind is not None and ident.kind != cycle_kind:
            return await self.probe(target, prior, headers, full=True)  # someone else now
        if full and ident.kind is not None:
            extra = [s for s in discovery_plan(target, ident.kind) if s.path not in got]
            if extra:
                got.update(await self._get_all(target, extra, send))
                responses = _responses(got)
                ident = identify(
                    responses, candidates=target.candidates, own_instance_id=self.own_instance_id
                )
        answers = dict(responses) if full else {**prior.answers, **responses}
        report, shows = await self._read(target, ident, answers, prior.shows, send)
        if not full and report is not None and _ids(report.models) != prior.model_ids:
            return await self.probe(target, prior, headers, full=True)  # models came or went
        return _result(ident, report, answers, shows, got, plan, full)

    async def _read(
        self,
        target: ProbeTarget,
        ident: Identification,
        answers: dict[str, ProbeResponse],
        cache: ShowCache,
        headers: dict[str, str],
    ) -> tuple[ServiceReport | None, ShowCache]:
        kind = ident.kind
        if kind is None or ident.verdict != "ready":
            return None, {}
        report = assemble(kind, target.name, answers)
        wanted = per_model_requests(kind, report.models)
        if not wanted:
            return report, {}
        # A model's answer is asked again only when its weights changed (a new digest).
        digests = {show_key(m.id): m.digest for m in report.models}
        shows: ShowCache = {}
        missing: list[tuple[PerModelRequest, str | None]] = []
        for req in wanted:
            cached = cache.get(req.key)
            if cached is not None and cached[0] == digests.get(req.key):
                shows[req.key] = cached
            else:
                missing.append((req, digests.get(req.key)))
        if missing:
            shows.update(await self._per_model(target, missing, headers))
        ok = {key: resp for key, (_, resp) in shows.items() if 200 <= resp.status < 300}
        if ok:
            report = assemble(kind, target.name, {**answers, **ok})
        return report, shows

    async def _per_model(
        self,
        target: ProbeTarget,
        requests: Sequence[tuple[PerModelRequest, str | None]],
        headers: dict[str, str],
    ) -> ShowCache:
        out: ShowCache = {}
        limiter = trio.CapacityLimiter(_PER_MODEL_CONCURRENCY)
        post = {**headers, "Content-Type": "application/json"}

        async def one(req: PerModelRequest, digest: str | None) -> None:
            async with limiter:
                fetched = await fetch(
                    self.client,
                    target.base_url + req.path,
                    timeout=self.timeout,
                    method=req.method,
                    body=req.body,
                    headers=post,
                )
            if isinstance(fetched.answer, ProbeResponse):
                out[req.key] = (digest, fetched.answer)

        async with trio.open_nursery() as nursery:
            for req, digest in requests:
                nursery.start_soon(one, req, digest)
        return out

    async def _get_all(
        self, target: ProbeTarget, steps: Sequence[ProbeStep], headers: dict[str, str]
    ) -> dict[str, Fetched]:
        out: dict[str, Fetched] = {}

        async def one(step: ProbeStep) -> None:
            out[step.path] = await fetch(
                self.client, target.base_url + step.path, timeout=self.timeout, headers=headers
            )

        async with trio.open_nursery() as nursery:
            for step in steps:
                nursery.start_soon(one, step)
        return out


def _ids(models: Sequence[DiscoveredModel]) -> frozenset[str]:
    return frozenset(m.id for m in models)


def _responses(got: Mapping[str, Fetched]) -> dict[str, ProbeResponse]:
    return {p: f.answer for p, f in got.items() if isinstance(f.answer, ProbeResponse)}


def _failed(got: Mapping[str, Fetched], full: bool) -> ProbeResult:
    """No HTTP answer at all: refused, timed out, not HTTP, or forbidden by the policy."""
    failures = [f.answer for f in got.values() if isinstance(f.answer, Failure)]
    for f in failures:
        if f.kind == "egress":
            detail = f"refused by the egress policy: {f.detail}"
            return ProbeResult("probe_refused", detail, full, error=detail, blocked=f.detail)
    kinds = {f.kind for f in failures}
    if kinds == {"timeout"}:
        detail = failures[0].detail
        return ProbeResult("probe_timeout", detail, full, error=detail)
    if "protocol" in kinds and "refused" not in kinds:
        detail = next(f.detail for f in failures if f.kind == "protocol")
        return ProbeResult(
            "probe_foreign", f"answers, but not in HTTP: {detail}", full, error=detail
        )
    detail = next((f.detail for f in failures if f.kind == "refused"), "no answer")
    return ProbeResult("probe_refused", detail, full, error=detail)


def _result(
    ident: Identification,
    report: ServiceReport | None,
    answers: dict[str, ProbeResponse],
    shows: ShowCache,
    got: Mapping[str, Fetched],
    plan: Sequence[ProbeStep],
    full: bool,
) -> ProbeResult:
    hinput = probe_input(ident, report)
    error: str | None = None
    if hinput not in ("probe_ok", "probe_busy"):
        error = ident.reason
    elif report is not None and report.errors:
        error = "; ".join(f"{e.parser}: {e.message}" for e in report.errors)
    first = got.get(plan[0].path) if plan else None
    answered = [f.elapsed for f in got.values() if isinstance(f.answer, ProbeResponse)]
    if first is not None and isinstance(first.answer, ProbeResponse):
        latency: float | None = first.elapsed
    else:
        latency = min(answered) if answered else None
    version = ident.version or (report.version if report is not None else None)
    return ProbeResult(
        hinput,
        ident.reason,
        full,
        kind=ident.kind,
        version=version,
        report=report,
        answers=answers,
        shows=shows,
        latency=latency,
        error=error,
    )
