"""The model database: the shipped data, validation, and user overrides."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from routerd.core.catalog import (
    CATEGORIES,
    LOWEST_TIER,
    UNKNOWN_SCORE,
    Catalog,
    CatalogError,
    Family,
    ModelEntry,
    ModelOverride,
    Priorities,
    Scores,
    parse_catalog,
    unknown_entry,
)
from routerd.core.resolve import resolve
from routerd.data import builtin_catalog_bytes, load_builtin_catalog

BUILTIN = load_builtin_catalog()

# Every key of the seed's MODEL_DATABASE (gemma-2-27b appears there twice).
SEED_IDS = [
    "deepseek-v3", "qwen2.5-coder-32b", "deepseek-coder-v2", "codellama-70b", "codellama-34b",
    "qwen2.5-coder-14b", "starcoder2-15b", "deepseek-coder-6.7b", "codellama-7b", "deepseek-r1",
    "deepseek-r1-distill-70b", "qwen2.5-72b-instruct", "llama-3.3-70b-instruct",
    "deepseek-r1-distill-32b", "mistral-small-24b", "qwen2.5-32b-instruct", "phi-4",
    "deepseek-r1-distill-14b", "llama-3.2-11b-vision", "gemma-2-27b", "deepseek-r1-distill-8b",
    "gemma-2-9b", "llama-3.2-3b", "mistral-nemo-12b", "mistral-7b", "phi-3-medium", "yi-34b",
    "command-r-plus", "wizardcoder-33b", "magicoder-7b", "dolphin-mixtral-8x7b",
    "nous-hermes-2-mixtral", "solar-10.7b",
]  # fmt: skip
# Every id the seed's TASK_MODEL_PRIORITY names.
SEED_PRIORITY_IDS = {
    "coding": [
        "deepseek-v3", "qwen2.5-coder-32b", "deepseek-coder-v2", "codellama-70b",
        "qwen2.5-coder-14b", "codellama-34b", "starcoder2-15b", "phi-4", "qwen2.5-coder-7b",
        "codellama-7b", "deepseek-coder-6.7b",
    ],
    "reasoning": [
        "deepseek-r1", "deepseek-v3", "deepseek-r1-distill-70b", "qwen2.5-72b-instruct",
        "llama-3.3-70b-instruct", "deepseek-r1-distill-32b", "mistral-small-24b",
        "qwen2.5-32b-instruct", "phi-4", "gemma-2-27b", "deepseek-r1-distill-14b",
        "deepseek-r1-distill-8b", "gemma-2-9b",
    ],
    "analysis": [
        "deepseek-v3", "qwen2.5-coder-32b", "deepseek-coder-v2", "codellama-34b-instruct",
        "qwen2.5-72b-instruct",
    ],
    "documentation": [
        "qwen2.5-72b-instruct", "llama-3.3-70b-instruct", "qwen2.5-32b-instruct",
        "mistral-small-24b", "mistral-nemo-12b", "gemma-2-27b",
    ],
}  # fmt: skip
# Models people run locally today that the database must know, by family and size.
LOCAL_MODELS = {
    "qwen2.5-coder": {"0.5b", "1.5b", "3b", "7b", "14b", "32b"},
    "qwen3": {"0.6b", "1.7b", "4b", "8b", "14b", "32b", "30b", "235b"},
    "qwen3-coder": {"30b", "480b"},
    "llama3.1": {"8b", "70b"},
    "llama3.2": {"1b", "3b"},
    "llama3.3": {"70b"},
    "deepseek-r1": {"1.5b", "7b", "8b", "14b", "32b", "70b", "671b"},
    "deepseek-coder-v2": {"16b", "236b"},
    "codellama": {"7b", "13b", "34b", "70b"},
    "phi4": {"14b"},
    "phi4-mini": {"3.8b"},
    "gemma2": {"2b", "9b", "27b"},
    "gemma3": {"1b", "4b", "12b", "27b"},
    "mistral": {"7b"},
    "mistral-nemo": {"12b"},
    "mistral-small": {"24b"},
    "codestral": {"22b"},
    "starcoder2": {"3b", "7b", "15b"},
    "granite-code": {"3b", "8b", "20b", "34b"},
    "smollm2": {"135m", "360m", "1.7b"},
    "gpt-oss": {"20b", "120b"},
    "devstral": {"24b"},
}


def _entry(model_id: str = "m-7b", **kw: Any) -> ModelEntry:
    fields: dict[str, Any] = {
        "id": model_id,
        "family": "m",
        "params_b": 7.0,
        "context_length": 4096,
        "vram_gb": 5.0,
        "tier": 2,
        "scores": Scores(coding=50, reasoning=50, analysis=50, documentation=50),
    }
    fields.update(kw)
    return ModelEntry(**fields)


def _toml(models: str, extra: str = "") -> bytes:
    return f"schema_version = 1\n{extra}\n{models}".encode()


_ONE = """
[[models]]
id = "m-7b"
family = "m"
params_b = 7.0
context_length = 4096
vram_gb = 5
tier = 2
scores = { coding = 50, reasoning = 50, analysis = 50, documentation = 50 }
"""


# --- The shipped database -------------------------------------------------------------------


def test_builtin_is_package_data_and_parses() -> None:
    assert builtin_catalog_bytes().startswith(b"#")
    assert len(BUILTIN) >= 80
    assert len({e.id for e in BUILTIN}) == len(BUILTIN)


def test_every_seed_model_is_there_once() -> None:
    for model_id in SEED_IDS:
        assert model_id in BUILTIN, model_id
    # The seed's second codellama-34b entry survives as an alias of the one entry.
    assert "codellama-34b-instruct" not in BUILTIN
    assert "codellama-34b-instruct" in BUILTIN["codellama-34b"].aliases


def test_gemma_2_27b_keeps_the_first_of_the_seeds_two_score_sets() -> None:
    assert BUILTIN["gemma-2-27b"].scores == Scores(
        coding=78, reasoning=82, analysis=78, documentation=80
    )


def test_every_id_of_the_seeds_priority_lists_resolves() -> None:
    for ids in SEED_PRIORITY_IDS.values():
        for model_id in ids:
            assert resolve(model_id, BUILTIN).model_id is not None, model_id
    assert "qwen2.5-coder-7b" in BUILTIN


def test_priorities_keep_the_seeds_order_and_name_only_ids() -> None:
    for category in CATEGORIES:
        ours = BUILTIN.priority(category)
        assert ours and all(m in BUILTIN for m in ours)
        seed = [resolve(m, BUILTIN).model_id for m in SEED_PRIORITY_IDS[category]]
        assert [m for m in ours if m in seed] == seed, category


@pytest.mark.parametrize("family", sorted(LOCAL_MODELS))
def test_current_local_models_are_known(family: str) -> None:
    sizes = {e.size for e in BUILTIN.in_family(family)}
    assert LOCAL_MODELS[family] <= sizes, (family, sizes)


def test_distills_are_separate_from_the_671b_model() -> None:
    r1 = BUILTIN["deepseek-r1"]
    for e in BUILTIN.in_family("deepseek-r1"):
        if e.id != r1.id:
            assert e.params_b < 100 and e.vram_gb < r1.vram_gb


def test_entries_are_sane() -> None:
    for e in BUILTIN:
        assert 1 <= e.tier <= LOWEST_TIER
        assert all(0 <= e.score(c) <= 100 for c in CATEGORIES)
        assert e.context_length >= 512
        assert 0 < e.vram_gb < 2 * e.params_b + 2, e.id
        if e.has("embedding"):
            assert all(e.score(c) == 0 for c in CATEGORIES)


def test_in_family_is_sorted_by_size_and_empty_for_strangers() -> None:
    sizes = [e.params_b for e in BUILTIN.in_family("qwen2.5-coder")]
    assert sizes == sorted(sizes) and len(sizes) == 6
    assert BUILTIN.in_family("nope") == ()


def test_mapping_protocol() -> None:
    assert BUILTIN.get("phi-4") is BUILTIN["phi-4"]
    assert BUILTIN.get("nope") is None
    with pytest.raises(KeyError):
        BUILTIN["nope"]
    assert "phi-4" in BUILTIN and "nope" not in BUILTIN
    assert next(iter(BUILTIN)) is BUILTIN.entries[0]


# --- Validation -----------------------------------------------------------------------------


def test_parse_normalises_size_labels() -> None:
    cat = parse_catalog(_toml(_ONE.replace('family = "m"', 'family = "m"\nsize = "7B"')))
    assert cat["m-7b"].size == "7b"
    assert parse_catalog(_toml(_ONE))["m-7b"].size == "7b"  # from params_b


def test_score_out_of_range_names_the_model() -> None:
    with pytest.raises(CatalogError, match=r"<= 100.*models\[0\].*'m-7b'"):
        parse_catalog(_toml(_ONE.replace("coding = 50", "coding = 101")))


def test_unknown_field_is_refused() -> None:
    with pytest.raises(CatalogError, match="contxt_length"):
        parse_catalog(_toml(_ONE + "contxt_length = 4\n"))


def test_bad_toml_is_a_catalog_error() -> None:
    with pytest.raises(CatalogError, match="TOML"):
        parse_catalog(b"schema_version = = 1")


def test_wrong_schema_version_is_refused() -> None:
    with pytest.raises(CatalogError, match="schema_version"):
        parse_catalog(_toml(_ONE).replace(b"schema_version = 1", b"schema_version = 2"))


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(CatalogError, match="'m-7b' appears twice"):
        Catalog([_entry(), _entry()])


def test_colliding_aliases_are_refused() -> None:
    with pytest.raises(CatalogError, match="reads the same as id 'm-7b'"):
        Catalog([_entry(), _entry("other-7b", family="o", aliases=("M_7B",))])


def test_size_must_agree_with_params() -> None:
    with pytest.raises(CatalogError, match=r"size 70b disagrees with params_b 7\.0"):
        Catalog([_entry(size="70b")])
    with pytest.raises(CatalogError, match="not a size"):
        Catalog([_entry(size="big")])


def test_constraints_are_checked_for_entries_built_in_python() -> None:
    with pytest.raises(CatalogError, match="model 'm-7b'"):
        Catalog([_entry(tier=7)])
    with pytest.raises(CatalogError, match="Expected `str` matching regex"):
        Catalog([_entry("Not An Id")])


def test_family_defaults_must_be_sizes_of_the_family() -> None:
    with pytest.raises(CatalogError, match=r"default '9b' is not a size of its models \(7b\)"):
        Catalog([_entry()], {"m": Family(default="9b")})
    with pytest.raises(CatalogError, match="family 'ghost' has no models"):
        Catalog([_entry()], {"ghost": Family()})


def test_family_aliases_may_not_collide_or_be_used_as_families() -> None:
    with pytest.raises(CatalogError, match="reads the same as family 'm'"):
        Catalog(
            [_entry(), _entry("n-7b", family="n")], {"m": Family(), "n": Family(aliases=("M",))}
        )
    with pytest.raises(CatalogError, match="family 'mm' is an alias; write 'm'"):
        Catalog([_entry(), _entry("x-7b", family="mm", aliases=())], {"m": Family(aliases=("mm",))})


def test_same_family_size_and_variant_twice_is_refused() -> None:
    with pytest.raises(CatalogError, match="both family 'm', size 7b, variant instruct"):
        Catalog([_entry(), _entry("m2-7b")])
    Catalog([_entry(), _entry("m-7b-base", variant="base")])  # another variant is fine


def test_priorities_must_name_ids() -> None:
    with pytest.raises(
        CatalogError, match=r"priorities.coding names 'ghost', which is no model id$"
    ):
        Catalog([_entry()], priorities=Priorities(coding=("ghost",)))
    with pytest.raises(CatalogError, match="did you mean 'm-7b'"):
        Catalog([_entry(aliases=("mine",))], priorities=Priorities(coding=("mine",)))
    with pytest.raises(CatalogError, match="lists m-7b more than once"):
        Catalog([_entry()], priorities=Priorities(analysis=("m-7b", "m-7b")))


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(CatalogError) as info:
        Catalog([_entry(), _entry(), _entry("z-7b", family="z", size="70b")])
    assert len(info.value.problems) >= 2


# --- Overrides from config ------------------------------------------------------------------


def test_override_changes_only_what_it_sets() -> None:
    cat = BUILTIN.merge([ModelOverride(id="qwen2.5-coder-14b", context_length=32768)])
    before, after = BUILTIN["qwen2.5-coder-14b"], cat["qwen2.5-coder-14b"]
    assert after.context_length == 32768
    assert msgspec.structs.replace(after, context_length=before.context_length) == before
    assert BUILTIN["qwen2.5-coder-14b"].context_length == 131072  # the original is untouched


def test_override_from_a_mapping_with_partial_scores_and_more_aliases() -> None:
    cat = BUILTIN.merge(
        [{"id": "phi-4", "scores": {"coding": 90}, "aliases": ["corp-phi"], "tier": None}]
    )
    phi = cat["phi-4"]
    assert phi.scores.coding == 90 and phi.scores.reasoning == BUILTIN["phi-4"].scores.reasoning
    assert phi.tier == BUILTIN["phi-4"].tier  # None keeps
    assert resolve("corp-phi:latest", cat).model_id == "phi-4"


def test_a_config_struct_with_the_same_field_names_plugs_in() -> None:
    class FromConfig(msgspec.Struct, kw_only=True):
        id: str
        context_length: int | None = None
        aliases: list[str] = []

    cat = BUILTIN.merge([FromConfig(id="codestral-22b", context_length=8192)])
    assert cat["codestral-22b"].context_length == 8192
    assert cat["codestral-22b"].aliases == BUILTIN["codestral-22b"].aliases


def test_new_model_from_config_is_resolvable() -> None:
    new = {
        "id": "corp-coder-7b",
        "family": "corp-coder",
        "params_b": 7,
        "context_length": 32768,
        "tier": 2,
        "scores": {"coding": 80, "reasoning": 60, "analysis": 70, "documentation": 60},
        "aliases": ["corp/coder"],
    }
    cat = BUILTIN.merge([new])
    e = cat["corp-coder-7b"]
    assert e.vram_gb == pytest.approx(4.7)  # estimated
    assert resolve("corp-coder:latest", cat).model_id == "corp-coder-7b"
    assert resolve("corp-coder:7b-q8_0", cat).model_id == "corp-coder-7b"
    assert resolve("corp-coder:13b", cat).model_id is None
    assert resolve("corp-coder:latest", BUILTIN).model_id is None


def test_new_model_needs_its_essentials() -> None:
    with pytest.raises(CatalogError, match=r"a new model needs family, params_b, .*scores"):
        BUILTIN.merge([{"id": "corp-9b", "context_length": 4096}])


def test_bad_override_values_are_catalog_errors_with_the_position() -> None:
    with pytest.raises(CatalogError, match=r"models\[1\]: .*<= 100"):
        BUILTIN.merge([{"id": "phi-4"}, {"id": "phi-4", "scores": {"coding": 150}}])
    with pytest.raises(CatalogError, match=r"models\[0\]: .*unknown field `contxt`"):
        BUILTIN.merge([{"id": "phi-4", "contxt": 1}])


def test_overrides_built_in_python_are_validated_too() -> None:
    bad = ModelOverride(id="phi-4", scores={"coding": 0.9})  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match=r"models\[0\]: Expected `int \| null`, got `float`"):
        BUILTIN.merge([bad])
    with pytest.raises(CatalogError, match=r"models\[0\]: .*<= 3"):
        BUILTIN.merge([ModelOverride(id="phi-4", tier=9)])


def test_override_that_breaks_the_catalog_is_refused() -> None:
    with pytest.raises(CatalogError, match="reads the same as id 'phi-4'"):
        BUILTIN.merge([ModelOverride(id="codestral-22b", aliases=("phi_4",))])


def test_a_model_entry_replaces_or_adds() -> None:
    cat = BUILTIN.merge([_entry("phi-4", family="phi4", params_b=14.7, size="14b")])
    assert cat["phi-4"].context_length == 4096
    assert len(cat) == len(BUILTIN)
    assert len(BUILTIN.merge([_entry()])) == len(BUILTIN) + 1


def test_unknown_entry_is_routable_at_the_lowest_tier() -> None:
    e = unknown_entry("/models/mystery.gguf", context_length=2048, params_b=3.0)
    assert (e.id, e.tier, e.context_length) == ("/models/mystery.gguf", LOWEST_TIER, 2048)
    assert all(e.score(c) == UNKNOWN_SCORE for c in CATEGORIES)
    lowest_known = min(x.score(c) for x in BUILTIN if x.tier < LOWEST_TIER for c in CATEGORIES)
    assert lowest_known > UNKNOWN_SCORE
    assert unknown_entry("x", context_length=0).context_length == 1
