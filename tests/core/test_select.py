"""routerd.core.select: which models, on which services, in which order, with which window."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.candidates import Candidate, candidate_from_discovered, hard_rejection
from routerd.core.catalog import Catalog, ModelEntry, Priorities, Scores
from routerd.core.config import AgentConfig, default_config
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.routing_policy import (
    AgentPreference,
    CategoryRoute,
    ModelRef,
    RoutingPolicy,
    as_category,
    policy_from_config,
)
from routerd.core.select import (
    FallbackLevel,
    RouteFailure,
    RoutePlan,
    RouteRequest,
    plan_route,
    window_for,
)


def _entry(
    mid: str,
    family: str,
    params: float,
    ctx: int,
    vram: float,
    tier: int,
    coding: int,
    reasoning: int = 50,
    caps: tuple[Any, ...] = (),
    variant: str = "instruct",
) -> ModelEntry:
    scores = Scores(coding=coding, reasoning=reasoning, analysis=coding, documentation=reasoning)
    return ModelEntry(
        id=mid,
        family=family,
        params_b=params,
        context_length=ctx,
        vram_gb=vram,
        tier=tier,
        scores=scores,
        capabilities=caps,
        variant=variant,
    )


CAT = Catalog(
    [
        _entry("bigcoder-32b", "bigcoder", 32, 32768, 20, 1, 95),
        _entry("bigcoder-14b", "bigcoder", 14, 32768, 9, 2, 91),
        _entry("midchat-8b", "midchat", 8, 8192, 5, 2, 70, 85),
        _entry("tiny-1b", "tiny", 1, 4096, 1, 3, 40),
        _entry("embedder-v1", "embedder", 0.1, 8192, 0.3, 3, 0, 0, ("embedding",), "embedding"),
        _entry("qwen2.5-coder-7b", "qwen2.5-coder", 7, 32768, 5, 2, 80),
        _entry("solver-70b", "solver", 70, 65536, 40, 1, 60, 97),
    ],
    priorities=Priorities(
        coding=("bigcoder-32b", "bigcoder-14b", "qwen2.5-coder-7b", "midchat-8b"),
        reasoning=("solver-70b", "midchat-8b"),
    ),
)


def ref(name: str) -> ModelRef:
    from routerd.core.routing_policy import model_ref

    return model_ref(name, CAT)


def policy(**kw: Any) -> RoutingPolicy:
    routes = {
        "coding": CategoryRoute(
            primary=(ref("bigcoder-32b"),),
            fallback=(ref("bigcoder-14b"),),
            catalog_order=CAT.priority("coding"),
            min_context=4096,
        ),
        "reasoning": CategoryRoute(
            primary=(ref("solver-70b"),),
            catalog_order=CAT.priority("reasoning"),
            min_context=8192,
        ),
    }
    base: dict[str, Any] = {
        "routes": routes,
        "agents": {
            "qwen-cli": AgentPreference(family="qwen"),
            "picky": AgentPreference(models=(ref("midchat:8b"),)),
        },
        "reserve_for_answer": 1000,
        "quality_tolerance": 5,
    }
    base.update(kw)
    return RoutingPolicy(**base)


def cand(model: str, service: str = "ollama", **kw: Any) -> Candidate:
    from routerd.core.resolve import resolve

    mid = resolve(model, CAT).model_id
    assert mid is not None, model
    entry = CAT[mid]
    fields: dict[str, Any] = {
        "service": service,
        "model": model,
        "entry": entry,
        "known": True,
        "context_length": entry.context_length,
        "vram_gb": entry.vram_gb,
    }
    fields.update(kw)
    return Candidate(**fields)


def plan(request: RouteRequest, cands: list[Candidate], **pol: Any) -> RoutePlan:
    result = plan_route(request, cands, policy(**pol), catalog=CAT)
    assert isinstance(result, RoutePlan), result
    return result


def fail(request: RouteRequest, cands: list[Candidate], **pol: Any) -> RouteFailure:
    result = plan_route(request, cands, policy(**pol), catalog=CAT)
    assert isinstance(result, RouteFailure), result
    return result


def order(p: RoutePlan) -> list[str]:
    return [a.candidate.label for a in p.attempts]


CODING = RouteRequest(category="coding", confidence=0.9, prompt_tokens=2000)
ALL = [cand("bigcoder:32b"), cand("bigcoder:14b"), cand("midchat:8b"), cand("tiny:1b")]

# --- category ----------------------------------------------------------------------------------


def test_classified_category_is_used_when_confident() -> None:
    p = plan(CODING, ALL)
    assert (p.category, p.category_source) == ("coding", "classified")
    assert "confidence 0.90" in p.explain[0]


def test_low_confidence_routes_to_the_default_category() -> None:
    req = RouteRequest(category="coding", confidence=0.2, prompt_tokens=10)
    p = plan(req, [*ALL, cand("solver:70b")], default_category="reasoning")
    assert (p.category, p.category_source) == ("reasoning", "default")
    assert order(p)[0] == "ollama/solver:70b"
    assert "0.20 < 0.40" in p.explain[0]


def test_no_classification_means_the_default_category() -> None:
    p = plan(RouteRequest(prompt_tokens=10), ALL, default_category="coding")
    assert (p.category, p.category_source) == ("coding", "default")


def test_explicit_category_beats_the_classification() -> None:
    req = RouteRequest(category="coding", confidence=0.99, explicit_category="reasoning")
    p = plan(req, [*ALL, cand("solver:70b")])
    assert (p.category, p.category_source) == ("reasoning", "explicit")
    assert order(p)[0] == "ollama/solver:70b"


def test_an_unknown_explicit_category_is_ignored_and_said_so() -> None:
    req = RouteRequest(category="coding", confidence=0.9, explicit_category="planning")
    p = plan(req, ALL)
    assert p.category_source == "classified"
    assert "'planning' is not one" in p.explain[0]


def test_a_classifier_enum_member_is_a_category() -> None:
    from routerd.core.classify import Category

    assert as_category(Category.ANALYSIS) == "analysis"
    assert as_category("planning") is None
    assert as_category(None) is None


# --- explicit model ----------------------------------------------------------------------------


def test_explicit_model_wins_over_a_better_one() -> None:
    req = RouteRequest(category="coding", explicit_model="tiny:1b", prompt_tokens=100)
    p = plan(req, ALL)
    assert order(p) == ["ollama/tiny:1b"]
    assert p.attempts[0].level == FallbackLevel.PRIMARY
    assert any("no other model" in line for line in p.explain)


def test_explicit_model_by_catalog_id_matches_the_reported_name() -> None:
    req = RouteRequest(explicit_model="bigcoder-14b", prompt_tokens=100)
    llama = cand("bigcoder-14b-instruct-q4_k_m.gguf", "llamacpp", loaded=True)
    p = plan(req, [*ALL, llama])
    assert order(p) == ["llamacpp/bigcoder-14b-instruct-q4_k_m.gguf", "ollama/bigcoder:14b"]


def test_explicit_model_not_available_is_a_failure_not_a_substitution() -> None:
    f = fail(RouteRequest(explicit_model="solver:70b"), ALL)
    assert f.code == "unknown_model"
    assert "'solver:70b'" in f.message and "read as solver-70b" in f.message
    assert "bigcoder:14b" in f.message  # what is available instead


def test_explicit_model_that_is_unusable_fails_with_the_reason() -> None:
    down = cand("tiny:1b", admission="refuse", health="offline")
    f = fail(RouteRequest(explicit_model="tiny:1b"), [*ALL[:3], down])
    assert f.code == "no_usable_model"
    assert [r.code for r in f.rejections] == ["service_offline"]
    assert "tiny:1b" in f.message and "offline" in f.message


def test_explicit_model_ignores_min_context_but_not_its_window() -> None:
    small = cand("tiny:1b", context_length=3000)
    req = RouteRequest(explicit_model="tiny:1b", prompt_tokens=1500)
    assert plan(req, [small]).attempts[0].level == FallbackLevel.PRIMARY  # min_context 4096
    big = RouteRequest(explicit_model="tiny:1b", prompt_tokens=2500, min_prompt_tokens=1200)
    p = plan(big, [small])
    assert [(a.level, a.context_budget_tokens) for a in p.attempts] == [
        (FallbackLevel.REDUCED_CONTEXT, 2000)
    ]


# --- order of the lists ------------------------------------------------------------------------


def test_primary_then_fallback_then_catalog_list_then_score() -> None:
    cands = [
        cand("tiny:1b"),
        cand("midchat:8b"),
        cand("qwen2.5-coder:7b"),
        cand("bigcoder:14b"),
        cand("bigcoder:32b"),
        cand("solver:70b"),
    ]
    p = plan(CODING, cands, max_attempts=10)
    assert order(p) == [
        "ollama/bigcoder:32b",  # primary
        "ollama/bigcoder:14b",  # fallback
        "ollama/qwen2.5-coder:7b",  # catalog list
        "ollama/midchat:8b",  # catalog list
        "ollama/solver:70b",  # unlisted, coding 60
        "ollama/tiny:1b",  # unlisted, coding 40
    ]
    levels = [a.level for a in p.attempts]
    assert levels[0] == FallbackLevel.PRIMARY
    assert set(levels[1:]) == {FallbackLevel.FALLBACK_MODELS}


def test_unknown_models_come_after_known_ones() -> None:
    unknown = candidate_from_discovered(
        DiscoveredModel(id="mystery.gguf", service="llamacpp", context_length=8192), CAT
    )
    assert not unknown.known and unknown.entry.family == "unknown"
    p = plan(CODING, [unknown, cand("tiny:1b")])
    assert order(p)[0] == "ollama/tiny:1b"
    assert "not in the model database" in p.attempts[1].reason


def test_config_lists_match_reported_names_without_the_catalog() -> None:
    pol = policy()
    route = msgspec.structs.replace(pol.routes["coding"], primary=(ModelRef("my-finetune"),))
    custom = msgspec.structs.replace(
        cand("tiny:1b"), model="My-Finetune:latest", known=False, entry=CAT["tiny-1b"]
    )
    p = plan(CODING, [cand("bigcoder:32b"), custom], routes={**pol.routes, "coding": route})
    assert order(p)[0] == "ollama/My-Finetune:latest"


# --- agents ------------------------------------------------------------------------------------


def test_agent_preferred_models_come_first() -> None:
    req = msgspec.structs.replace(CODING, agent="picky")
    p = plan(req, ALL)
    assert order(p)[0] == "ollama/midchat:8b"
    assert p.attempts[0].level == FallbackLevel.PRIMARY
    assert "preferred by agent picky" in p.attempts[0].reason


def test_agent_family_promotes_listed_models_only() -> None:
    cands = [cand("bigcoder:32b"), cand("qwen2.5-coder:7b")]
    p = plan(msgspec.structs.replace(CODING, agent="qwen-cli"), cands)
    assert order(p) == ["ollama/qwen2.5-coder:7b", "ollama/bigcoder:32b"]
    assert "prefers family qwen" in p.attempts[0].reason
    # Not on any coding list (the catalog's list dropped): no promotion.
    pol = policy()
    route = msgspec.structs.replace(pol.routes["coding"], catalog_order=())
    p = plan(
        msgspec.structs.replace(CODING, agent="qwen-cli"),
        cands,
        routes={**pol.routes, "coding": route},
    )
    assert order(p) == ["ollama/bigcoder:32b", "ollama/qwen2.5-coder:7b"]


def test_unknown_agent_changes_nothing() -> None:
    assert order(plan(msgspec.structs.replace(CODING, agent="nobody"), ALL)) == order(
        plan(CODING, ALL)
    )


# --- loaded models -----------------------------------------------------------------------------


def test_loaded_model_within_tolerance_goes_first() -> None:
    cands = [cand("bigcoder:32b", loaded=False), cand("bigcoder:14b", loaded=True)]
    p = plan(CODING, cands, quality_tolerance=5)  # 91 >= 95 - 5
    assert order(p) == ["ollama/bigcoder:14b", "ollama/bigcoder:32b"]
    assert "within 5 points of ollama/bigcoder:32b" in p.attempts[0].reason
    p = plan(CODING, cands, quality_tolerance=3)
    assert order(p) == ["ollama/bigcoder:32b", "ollama/bigcoder:14b"]


def test_loaded_with_too_small_a_window_is_not_resident() -> None:
    loaded_small = cand("bigcoder:14b", loaded=True, window_settable=True, loaded_context=2048)
    cands = [cand("bigcoder:32b", window_settable=True), loaded_small]
    p = plan(CODING, cands)  # needs 3000 tokens: the 14b would reload with a larger num_ctx
    assert order(p)[0] == "ollama/bigcoder:32b"


def test_window_for_settable_and_fixed_windows() -> None:
    fixed = cand("tiny:1b", context_length=4096)
    assert window_for(fixed, 100) == 4096
    settable = cand("bigcoder:14b", window_settable=True, context_length=32768)
    assert window_for(settable, 100) == 2048
    assert window_for(settable, 5000) == 8192
    assert window_for(settable, 40000) == 32768
    warm = msgspec.structs.replace(settable, loaded=True, loaded_context=12000)
    assert window_for(warm, 5000) == 12000  # no reload
    assert window_for(warm, 13000) == 16384


# --- same model on several services -------------------------------------------------------------


def test_same_model_loaded_service_first() -> None:
    a = cand("bigcoder:32b", "ollama", service_priority=1)
    b = cand("bigcoder:32b", "gpu-box", service_priority=5, loaded=True)
    assert order(plan(CODING, [a, b]))[:2] == ["gpu-box/bigcoder:32b", "ollama/bigcoder:32b"]


def test_same_model_less_busy_then_service_priority() -> None:
    a = cand("bigcoder:32b", "ollama", service_priority=1, in_flight=1)
    b = cand("bigcoder:32b", "gpu-box", service_priority=5)
    assert order(plan(CODING, [a, b]))[0] == "gpu-box/bigcoder:32b"
    c = cand("bigcoder:32b", "ollama", service_priority=1)
    assert order(plan(CODING, [b, c]))[0] == "ollama/bigcoder:32b"
    # Other machines' clients count too: the server's own busy slots.
    busy = cand("bigcoder:32b", "llamacpp", service_priority=0, busy_slots=2, total_slots=2)
    assert order(plan(CODING, [busy, b]))[0] == "gpu-box/bigcoder:32b"


def test_service_on_trial_comes_after_an_admitted_one() -> None:
    trial = cand("bigcoder:32b", "ollama", service_priority=1, admission="trial", health="degraded")
    ok = cand("bigcoder:32b", "gpu-box", service_priority=5)
    p = plan(CODING, [trial, ok])
    assert order(p)[:2] == ["gpu-box/bigcoder:32b", "ollama/bigcoder:32b"]
    assert "trial" in p.attempts[1].reason


# --- rejections ---------------------------------------------------------------------------------


def test_health_kind_and_vram_rejections() -> None:
    cands = [
        cand("bigcoder:32b", "a", admission="refuse", health="offline"),
        cand("bigcoder:32b", "b", admission="refuse", health="unauthorized"),
        cand("bigcoder:32b", "c", admission="refuse", health="degraded"),
        cand("embedder-v1", "d"),
        cand("bigcoder:14b", "e"),
        cand("tiny:1b", "f"),
    ]
    p = plan(msgspec.structs.replace(CODING, vram_limit_gb=8), cands)
    assert order(p) == ["f/tiny:1b"]
    codes = {f"{r.service}": r.code for r in p.rejections}
    assert codes == {
        "a": "service_offline",
        "b": "service_unauthorized",
        "c": "service_unavailable",
        "d": "embedding_only",
        "e": "vram",
    }
    assert any("over the 8 GB limit" in line for line in p.explain)


def test_a_blocked_model_is_rejected_first_and_the_plan_says_why() -> None:
    blocked = cand("bigcoder:32b", "a", blocked="checksum mismatch: /m/x.gguf",
                   admission="refuse", health="offline")  # fmt: skip
    p = plan(CODING, [blocked, cand("bigcoder:14b", "b")])
    assert order(p) == ["b/bigcoder:14b"]
    assert [(r.code, r.detail) for r in p.rejections] == [
        ("blocked", "blocked (checksum mismatch: /m/x.gguf)")
    ]
    assert "not used: a/bigcoder:32b: blocked (checksum mismatch: /m/x.gguf)" in p.explain


def test_embedding_by_server_capabilities() -> None:
    m = DiscoveredModel(id="bge-m3:latest", service="ollama", capabilities=("embedding",))
    c = candidate_from_discovered(m, CAT)
    assert c.embedding_only
    r = hard_rejection(c, None)
    assert r is not None and r.code == "embedding_only"
    chat = DiscoveredModel(id="x:latest", service="o", capabilities=("completion", "tools"))
    assert not candidate_from_discovered(chat, CAT).embedding_only


def test_no_candidates_at_all() -> None:
    f = fail(CODING, [])
    assert f.code == "no_models" and "routerctl status" in f.message


# --- context -----------------------------------------------------------------------------------


def test_context_requirement_filters_and_reduced_context_compacts() -> None:
    req = RouteRequest(category="coding", prompt_tokens=10000, min_prompt_tokens=3000)
    cands = [cand("bigcoder:32b"), cand("midchat:8b"), cand("tiny:1b", context_length=3500)]
    p = plan(req, cands)
    got = [(a.candidate.label, a.level, a.context_budget_tokens) for a in p.attempts]
    assert got == [
        ("ollama/bigcoder:32b", FallbackLevel.PRIMARY, 31768),
        ("ollama/midchat:8b", FallbackLevel.REDUCED_CONTEXT, 7192),
    ]
    (r,) = p.rejections
    assert (r.model, r.code) == ("tiny:1b", "below_min_context")
    assert "compacted" in p.attempts[1].reason


def test_context_that_cannot_be_compacted_rejects_small_windows() -> None:
    req = RouteRequest(category="coding", prompt_tokens=10000)
    p = plan(req, [cand("bigcoder:32b"), cand("midchat:8b")])
    assert order(p) == ["ollama/bigcoder:32b"]
    assert [(r.model, r.code) for r in p.rejections] == [("midchat:8b", "context_too_small")]
    assert "below the 11000 tokens needed" in p.rejections[0].detail


def test_smallest_model_is_the_last_resort_and_ignores_min_context() -> None:
    req = RouteRequest(category="reasoning", prompt_tokens=1500, min_prompt_tokens=500)
    cands = [cand("solver:70b"), cand("tiny:1b")]  # tiny: 4096 < reasoning's 8192
    p = plan(req, cands)
    assert [(a.candidate.label, a.level) for a in p.attempts] == [
        ("ollama/solver:70b", FallbackLevel.PRIMARY),
        ("ollama/tiny:1b", FallbackLevel.SMALLEST_MODEL),
    ]
    assert p.attempts[1].context_budget_tokens == 3096
    assert "last resort" in p.attempts[1].reason


def test_smallest_model_already_planned_is_not_repeated() -> None:
    p = plan(CODING, ALL)
    labels = order(p)
    assert len(labels) == len(set(labels))
    assert FallbackLevel.SMALLEST_MODEL not in [a.level for a in p.attempts]


def test_nothing_fits_is_a_failure_listing_each_reason() -> None:
    req = RouteRequest(category="coding", prompt_tokens=50000)
    f = fail(req, [cand("bigcoder:32b"), cand("midchat:8b", admission="refuse", health="offline")])
    assert f.code == "no_usable_model"
    assert sorted(r.code for r in f.rejections) == ["context_too_small", "service_offline"]
    assert "bigcoder:32b" in f.message and "midchat:8b" in f.message


def test_max_attempts_keeps_the_best_and_the_smallest() -> None:
    cands = [
        cand("bigcoder:32b"),
        cand("bigcoder:14b"),
        cand("qwen2.5-coder:7b"),
        cand("midchat:8b", context_length=4096),
        cand("tiny:1b", context_length=4096),
    ]
    p = plan(RouteRequest(category="reasoning", prompt_tokens=100), cands, max_attempts=2)
    assert [a.level for a in p.attempts] == [
        FallbackLevel.FALLBACK_MODELS,
        FallbackLevel.SMALLEST_MODEL,
    ]
    assert order(p)[1] == "ollama/tiny:1b"
    assert [r.code for r in p.rejections].count("left_out") == 2
    # The smallest model, planned too late to fit, comes back as the last resort only.
    low = [cand("bigcoder:32b"), cand("bigcoder:14b"), cand("tiny:1b", context_length=32768)]
    p = plan(CODING, low, max_attempts=2)
    assert [(a.candidate.model, a.level) for a in p.attempts] == [
        ("bigcoder:32b", FallbackLevel.PRIMARY),
        ("tiny:1b", FallbackLevel.SMALLEST_MODEL),
    ]
    assert [(r.model, r.code) for r in p.rejections] == [("bigcoder:14b", "left_out")]
    one = plan(RouteRequest(category="reasoning", prompt_tokens=100), cands, max_attempts=1)
    assert len(one.attempts) == 1 and one.attempts[0].level == FallbackLevel.FALLBACK_MODELS


# --- building candidates and the policy --------------------------------------------------------


def test_candidate_from_an_ollama_model() -> None:
    m = DiscoveredModel(
        id="bigcoder:14b",
        service="ollama",
        loaded=True,
        context_length=8192,
        max_context_length=32768,
        size_vram=9_500_000_000,
        parameter_size="14.8B",
    )
    c = candidate_from_discovered(m, CAT, window_settable=True, in_flight=1, service_priority=2)
    assert (c.entry.id, c.known, c.context_length, c.loaded_context) == (
        "bigcoder-14b",
        True,
        32768,
        8192,
    )
    assert (c.vram_gb, c.in_flight, c.service_priority) == (9.5, 1, 2)
    fixed = candidate_from_discovered(m, CAT)
    assert (fixed.context_length, fixed.loaded_context) == (8192, None)


def test_candidate_window_falls_back_to_the_catalog_then_a_default() -> None:
    known = candidate_from_discovered(DiscoveredModel(id="midchat:8b", service="s"), CAT)
    assert known.context_length == 8192 and known.vram_gb == 5
    odd = candidate_from_discovered(DiscoveredModel(id="zzz", service="s"), CAT)
    assert odd.context_length == 4096 and not odd.known
    aliased = DiscoveredModel(id="model.gguf", service="s", aliases=("tiny:1b",))
    assert candidate_from_discovered(aliased, CAT).entry.id == "tiny-1b"


def test_policy_from_config_resolves_names() -> None:
    cfg = default_config()
    cfg.task_routing.coding.primary_models = ["BigCoder:32b", "my-finetune"]
    cfg.agents["picky"] = AgentConfig(preferred_models=["midchat"])
    cfg.routing.default_category = "analysis"
    cfg.routing.quality_tolerance = 7
    pol = policy_from_config(cfg, CAT)
    assert pol.routes["coding"].primary == (
        ModelRef("BigCoder:32b", "bigcoder-32b"),
        ModelRef("my-finetune", None),
    )
    assert pol.routes["coding"].catalog_order == CAT.priority("coding")
    assert pol.routes["reasoning"].min_context == 16384
    assert pol.agents["picky"].models == (ModelRef("midchat", "midchat-8b"),)
    assert pol.agents["qwen-cli"].family == "qwen"
    assert (pol.default_category, pol.quality_tolerance, pol.max_attempts) == ("analysis", 7, 6)


# --- properties ---------------------------------------------------------------------------------

_MODELS = [
    "bigcoder:32b",
    "bigcoder:14b",
    "midchat:8b",
    "tiny:1b",
    "qwen2.5-coder:7b",
    "solver:70b",
]


@st.composite
def _candidates(draw: st.DrawFn) -> list[Candidate]:
    out = []
    for i in range(draw(st.integers(0, 7))):
        model = draw(st.sampled_from(_MODELS))
        settable = draw(st.booleans())
        loaded = draw(st.sampled_from([None, True, False]))
        out.append(
            cand(
                model,
                f"s{i % 3}",
                context_length=draw(st.sampled_from([2048, 4096, 8192, 32768])),
                loaded=loaded,
                window_settable=settable,
                loaded_context=draw(st.sampled_from([None, 2048, 8192])) if loaded else None,
                admission=draw(st.sampled_from(["admit", "admit", "trial", "refuse"])),
                in_flight=draw(st.integers(0, 2)),
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(
    cands=_candidates(),
    prompt=st.integers(0, 40000),
    floor=st.none() | st.integers(0, 40000),
    explicit=st.none() | st.sampled_from(_MODELS),
    category=st.sampled_from(["coding", "reasoning", "analysis", "documentation"]),
    max_attempts=st.integers(1, 8),
)
def test_every_plan_keeps_its_invariants(
    cands: list[Candidate],
    prompt: int,
    floor: int | None,
    explicit: str | None,
    category: str,
    max_attempts: int,
) -> None:
    req = RouteRequest(
        category=category, prompt_tokens=prompt, min_prompt_tokens=floor, explicit_model=explicit
    )
    result = plan_route(req, cands, policy(max_attempts=max_attempts), catalog=CAT)
    if isinstance(result, RouteFailure):
        assert result.message
        return
    least = prompt if floor is None else min(floor, prompt)
    keys = [a.candidate.key for a in result.attempts]
    assert 1 <= len(keys) <= max_attempts
    assert len(keys) == len(set(keys))
    for a in result.attempts:
        assert a.window_tokens - a.context_budget_tokens == result.reserve_tokens
        assert a.context_budget_tokens >= least
        assert a.window_tokens <= a.candidate.context_length
        assert a.candidate.admission != "refuse"
        if explicit is not None:
            assert a.candidate.model == explicit
        if a.level in (FallbackLevel.PRIMARY, FallbackLevel.FALLBACK_MODELS):
            assert a.context_budget_tokens >= prompt
    levels = [a.level for a in result.attempts]
    full = [i for i, lv in enumerate(levels) if lv <= FallbackLevel.FALLBACK_MODELS]
    reduced = [i for i, lv in enumerate(levels) if lv == FallbackLevel.REDUCED_CONTEXT]
    assert not full or not reduced or max(full) < min(reduced)
    assert FallbackLevel.SMALLEST_MODEL not in levels[:-1]
