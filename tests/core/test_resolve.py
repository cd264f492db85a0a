"""Resolution of the model names real servers report, against the built-in database."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.catalog import Catalog
from routerd.core.modelname import parse_name, parse_size
from routerd.core.nameindex import NAME_TOLERANCE
from routerd.core.resolve import Resolution, resolve, resolve_all
from routerd.data import load_builtin_catalog

CATALOG: Catalog = load_builtin_catalog()

# (name as a server or a user writes it, expected database id or None)
CASES: list[tuple[str, str | None]] = [
    # Ollama library tags: name:size-variant-quant
    ("qwen2.5-coder:14b-instruct-q8_0", "qwen2.5-coder-14b"),
    ("qwen2.5-coder:32b", "qwen2.5-coder-32b"),
    ("qwen2.5-coder:1.5b-base-q8_0", "qwen2.5-coder-1.5b"),
    ("qwen2.5-coder:0.5b", "qwen2.5-coder-0.5b"),
    ("qwen2.5-coder:latest", "qwen2.5-coder-7b"),
    ("qwen2.5:72b-instruct-q4_K_M", "qwen2.5-72b-instruct"),
    ("qwen2.5:latest", "qwen2.5-7b-instruct"),
    ("qwen3:30b-a3b", "qwen3-30b-a3b"),
    ("qwen3:30b-a3b-instruct-2507-q4_K_M", "qwen3-30b-a3b"),
    ("qwen3:latest", "qwen3-8b"),
    ("qwen3:0.6b", "qwen3-0.6b"),
    ("qwen3-coder:30b", "qwen3-coder-30b"),
    ("qwen3-coder:latest", "qwen3-coder-30b"),
    ("qwq:32b-q4_K_M", "qwq-32b"),
    ("phi4:latest", "phi-4"),
    ("phi4:14b-q8_0", "phi-4"),
    ("phi4-mini:3.8b", "phi-4-mini"),
    ("phi4-reasoning:14b", "phi-4-reasoning"),
    ("phi3:medium", "phi-3-medium"),
    ("phi3:14b-medium-4k-instruct-q4_0", "phi-3-medium"),
    ("phi3:latest", "phi-3-mini"),
    ("phi3.5:3.8b-mini-instruct-q4_0", "phi-3.5-mini"),
    ("llama3.3:70b-instruct-q3_K_M", "llama-3.3-70b-instruct"),
    ("llama3.3:latest", "llama-3.3-70b-instruct"),
    ("llama3.2:latest", "llama-3.2-3b"),
    ("llama3.2:1b-instruct-fp16", "llama-3.2-1b"),
    ("llama3.1:8b-text-q4_0", "llama-3.1-8b"),
    ("llama3.1:70b", "llama-3.1-70b"),
    ("llama3:8b", "llama-3-8b"),
    ("llama3.2-vision:11b", "llama-3.2-11b-vision"),
    ("llama3.2-vision:90b-instruct-q4_K_M", "llama-3.2-90b-vision"),
    ("songfy/llama3.1:8b", "llama-3.1-8b"),
    ("deepseek-r1:1.5b", "deepseek-r1-distill-1.5b"),
    ("deepseek-r1:7b", "deepseek-r1-distill-7b"),
    ("deepseek-r1:8b", "deepseek-r1-distill-8b"),
    ("deepseek-r1:14b-qwen-distill-q4_K_M", "deepseek-r1-distill-14b"),
    ("deepseek-r1:32b", "deepseek-r1-distill-32b"),
    ("deepseek-r1:70b-llama-distill-q4_K_M", "deepseek-r1-distill-70b"),
    ("deepseek-r1:8b-0528-qwen3-q4_K_M", "deepseek-r1-distill-8b"),
    ("deepseek-r1:671b", "deepseek-r1"),
    ("deepseek-r1:latest", "deepseek-r1-distill-8b"),
    ("deepseek-v3:671b", "deepseek-v3"),
    ("deepseek-coder-v2:16b-lite-instruct-q4_K_M", "deepseek-coder-v2-16b"),
    ("deepseek-coder-v2:236b", "deepseek-coder-v2"),
    ("deepseek-coder-v2:latest", "deepseek-coder-v2-16b"),
    ("deepseek-coder:6.7b-instruct-q4_K_M", "deepseek-coder-6.7b"),
    ("deepseek-coder:latest", "deepseek-coder-1.3b"),
    ("codellama:7b", "codellama-7b"),
    ("codellama:13b", "codellama-13b"),
    ("codellama:13b-instruct-q4_K_M", "codellama-13b"),
    ("codellama:34b", "codellama-34b"),
    ("codellama:70b-python", "codellama-70b"),
    ("codellama:latest", "codellama-7b"),
    ("gemma2:27b", "gemma-2-27b"),
    ("gemma2:latest", "gemma-2-9b"),
    ("gemma3:12b-it-qat", "gemma-3-12b"),
    ("gemma3:latest", "gemma-3-4b"),
    ("mistral:7b-instruct-v0.3-q4_K_M", "mistral-7b"),
    ("mistral-nemo:12b", "mistral-nemo-12b"),
    ("mistral-small:22b", "mistral-small-22b"),
    ("mistral-small:latest", "mistral-small-24b"),
    ("mistral-small3.1:24b", "mistral-small-24b"),
    ("codestral:22b-v0.1-q4_K_M", "codestral-22b"),
    ("codestral:latest", "codestral-22b"),
    ("devstral:24b", "devstral-24b"),
    ("devstral:24b-small-2505-q4_K_M", "devstral-24b"),
    ("starcoder2:3b", "starcoder2-3b"),
    ("starcoder2:15b-instruct-v0.1-q4_K_M", "starcoder2-15b"),
    ("granite-code:8b", "granite-code-8b"),
    ("granite-code:34b-instruct-q4_K_M", "granite-code-34b"),
    ("smollm2:135m", "smollm2-135m"),
    ("smollm2:360m-instruct-q8_0", "smollm2-360m"),
    ("smollm2:latest", "smollm2-1.7b"),
    ("gpt-oss:20b", "gpt-oss-20b"),
    ("gpt-oss:120b", "gpt-oss-120b"),
    ("gpt-oss:latest", "gpt-oss-20b"),
    ("mixtral:8x7b", "mixtral-8x7b"),
    ("mixtral:8x22b-instruct-v0.1-q4_0", "mixtral-8x22b"),
    ("dolphin-mixtral:8x7b", "dolphin-mixtral-8x7b"),
    ("nous-hermes2-mixtral:8x7b", "nous-hermes-2-mixtral"),
    ("command-r-plus:104b", "command-r-plus"),
    ("wizardcoder:33b", "wizardcoder-33b"),
    ("magicoder:7b-s-cl-q4_0", "magicoder-7b"),
    ("yi:34b", "yi-34b"),
    ("solar:10.7b", "solar-10.7b"),
    ("nomic-embed-text:latest", "nomic-embed-text"),
    ("nomic-embed-text:v1.5", "nomic-embed-text"),
    ("mxbai-embed-large:335m", "mxbai-embed-large"),
    # Ollama pulling from Hugging Face
    ("hf.co/bartowski/Qwen2.5-Coder-14B-Instruct-GGUF:Q4_K_M", "qwen2.5-coder-14b"),
    ("hf.co/unsloth/DeepSeek-R1-Distill-Qwen-7B-GGUF:latest", "deepseek-r1-distill-7b"),
    ("hf.co/bartowski/DeepSeek-Coder-V2-Lite-Instruct-GGUF:Q4_K_M", "deepseek-coder-v2-16b"),
    # Hugging Face repository ids (vLLM, TGI, LocalAI), with quantisation suffixes
    ("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", "qwen2.5-coder-14b"),
    ("Qwen/Qwen2.5-Coder-32B-Instruct-GPTQ-Int4", "qwen2.5-coder-32b"),
    ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b-instruct"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-coder-30b"),
    ("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8", "qwen3-coder-480b"),
    ("Qwen/QwQ-32B", "qwq-32b"),
    ("TheBloke/CodeLlama-13B-Instruct-GGUF", "codellama-13b"),
    ("TheBloke/deepseek-coder-6.7B-instruct-GGUF", "deepseek-coder-6.7b"),
    ("TheBloke/dolphin-2.7-mixtral-8x7b-GGUF", "dolphin-mixtral-8x7b"),
    ("codellama/CodeLlama-34b-Instruct-hf", "codellama-34b"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b-instruct"),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "llama-3.2-11b-vision"),
    ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
    ("deepseek-ai/DeepSeek-V3-0324", "deepseek-v3"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-r1-distill-1.5b"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1-distill-32b"),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek-r1-distill-70b"),
    ("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", "deepseek-r1-distill-8b"),
    ("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "deepseek-coder-v2-16b"),
    ("deepseek-ai/DeepSeek-Coder-V2-Instruct", "deepseek-coder-v2"),
    ("microsoft/phi-4", "phi-4"),
    ("microsoft/Phi-4-mini-instruct", "phi-4-mini"),
    ("microsoft/Phi-3-medium-128k-instruct", "phi-3-medium"),
    ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini"),
    ("google/gemma-2-9b-it", "gemma-2-9b"),
    ("google/gemma-3-27b-it", "gemma-3-27b"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
    ("mistralai/Mistral-Nemo-Instruct-2407", "mistral-nemo-12b"),
    ("mistralai/Mistral-Small-24B-Instruct-2501", "mistral-small-24b"),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "mistral-small-24b"),
    ("mistralai/Codestral-22B-v0.1", "codestral-22b"),
    ("mistralai/Devstral-Small-2505", "devstral-24b"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ("bigcode/starcoder2-15b", "starcoder2-15b"),
    ("ibm-granite/granite-8b-code-instruct-128k", "granite-code-8b"),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "smollm2-1.7b"),
    ("openai/gpt-oss-120b", "gpt-oss-120b"),
    ("NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO", "nous-hermes-2-mixtral"),
    ("CohereForAI/c4ai-command-r-plus", "command-r-plus"),
    ("01-ai/Yi-34B-Chat", "yi-34b"),
    ("upstage/SOLAR-10.7B-Instruct-v1.0", "solar-10.7b"),
    ("ise-uiuc/Magicoder-S-DS-6.7B", "magicoder-7b"),
    ("WizardLMTeam/WizardCoder-33B-V1.1", "wizardcoder-33b"),
    # LM Studio ids
    ("lmstudio-community/Meta-Llama-3.1-8B-Instruct-GGUF", "llama-3.1-8b"),
    (
        "lmstudio-community/Qwen2.5-Coder-14B-Instruct-GGUF/Qwen2.5-Coder-14B-Instruct-Q4_K_M.gguf",
        "qwen2.5-coder-14b",
    ),
    ("qwen2.5-coder-14b-instruct-mlx", "qwen2.5-coder-14b"),
    ("qwen2.5-coder-7b-instruct", "qwen2.5-coder-7b"),
    ("qwen2.5-coder-14b-instruct@q4_k_m", "qwen2.5-coder-14b"),
    ("mlx-community/Qwen2.5-Coder-32B-Instruct-4bit", "qwen2.5-coder-32b"),
    ("llama-3.2-3b-instruct", "llama-3.2-3b"),
    ("google/gemma-3-12b", "gemma-3-12b"),
    ("text-embedding-nomic-embed-text-v1.5", "nomic-embed-text"),
    # GGUF file names and paths (llama.cpp, llama-cpp-python, KoboldCpp, GPT4All)
    ("/models/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m"),  # real llama.cpp capture
    ("/models/SmolLM2-135M-Instruct-Q4_1.gguf", "smollm2-135m"),
    ("smollm2-135m", "smollm2-135m"),  # the same server run with --alias
    ("codellama-13b-instruct.Q4_K_M.gguf", "codellama-13b"),
    ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "llama-3.1-8b"),
    ("/srv/llm/Qwen2.5-Coder-7B-Instruct-Q5_K_M.gguf", "qwen2.5-coder-7b"),
    ("C:\\Models\\phi-4-Q4_K_M.gguf", "phi-4"),
    ("Qwen_Qwen3-8B-Q4_K_M.gguf", "qwen3-8b"),
    ("deepseek-ai_DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf", "deepseek-r1-distill-8b"),
    ("openai_gpt-oss-20b-MXFP4.gguf", "gpt-oss-20b"),
    ("gemma-3-27b-it-qat-q4_0.gguf", "gemma-3-27b"),
    ("Qwen3-235B-A22B-Q4_K_M-00001-of-00003.gguf", "qwen3-235b-a22b"),
    ("/models/qwen2.5-coder-7b-instruct/ggml-model-q4_0.gguf", "qwen2.5-coder-7b"),
    ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "mistral-7b"),
    # Seed ids and aliases, as a user writes them in config
    ("deepseek-r1", "deepseek-r1"),
    ("codestral", "codestral-22b"),
    ("codellama-34b-instruct", "codellama-34b"),
    ("llama-3.3-70b-instruct", "llama-3.3-70b-instruct"),
    ("Gemma-2-27B", "gemma-2-27b"),
    ("QWEN2.5_CODER_32B", "qwen2.5-coder-32b"),
    # Negative: unknown models, other families with similar names, sizes that do not exist
    ("unknown-model:1b", None),
    ("codellama:17b", None),
    ("llama3.1:13b", None),
    ("qwen2.5-coder:13b", None),
    ("deepseek-r1:3b", None),
    ("mistral-nemo:7b", None),
    ("qwen2.5-coder", None),  # several sizes, none given, not an Ollama name
    ("qwen2.5-math:7b", None),
    ("qwen2.5vl:7b", None),
    ("qwen2:7b", None),
    ("yi-coder:9b", None),
    ("codegemma:7b", None),
    ("codeqwen:7b", None),
    ("gemma3n:e4b", None),
    ("llama-guard3:8b", None),
    ("llama2:13b", None),
    ("llava:7b", None),
    ("starcoder:15b", None),
    ("dolphin-mistral:7b", None),
    ("mistral-large:123b", None),
    ("command-r:35b", None),
    ("granite3.3:8b", None),
    ("smollm:135m", None),
    ("Hermes-3-Llama-3.1-8B", None),
    ("Qwen2.5-Coder-7B-Instruct-abliterated", None),
    ("/models/model.gguf", None),
    ("gpt-4o", None),
    ("", None),
    (":latest", None),
    ("7b", None),
]


def test_table_is_large_and_has_negatives() -> None:
    assert len(CASES) >= 60
    assert sum(1 for _, want in CASES if want is None) >= 20
    assert len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "want"), CASES)
def test_resolves_real_names(name: str, want: str | None) -> None:
    got = resolve(name, CATALOG)
    assert got.model_id == want, got.reason
    assert got.name == name
    assert got.reason
    assert (got.matched_by == "none") == (want is None)


def test_no_size_codellama_13b_never_falls_to_a_neighbour() -> None:
    for name in ("codellama:13b", "CodeLlama-13B-Instruct", "codellama-13b-python.Q8_0.gguf"):
        assert resolve(name, CATALOG).model_id == "codellama-13b"
    assert resolve("codellama:12b", CATALOG).model_id is None


def test_parsed_parts_of_an_ollama_tag() -> None:
    r = resolve("qwen2.5-coder:14b-instruct-q8_0", CATALOG)
    assert (r.family, r.size, r.params_b, r.variant, r.quant, r.source_format) == (
        "qwen2.5-coder",
        "14b",
        14.0,
        "instruct",
        "q8_0",
        "ollama",
    )
    assert r.matched_by == "size"


@pytest.mark.parametrize(
    ("name", "fmt", "quant"),
    [
        ("Qwen/Qwen2.5-Coder-14B-Instruct-AWQ", "hf", "awq"),
        ("/models/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf", "q4_1"),
        ("lmstudio-community/Meta-Llama-3.1-8B-Instruct-GGUF", "lmstudio", None),
        ("qwen2.5-coder-14b-instruct-mlx", "lmstudio", "mlx"),
        ("codestral", "plain", None),
        ("hf.co/bartowski/Qwen2.5-Coder-14B-Instruct-GGUF:Q4_K_M", "ollama", "q4_k_m"),
    ],
)
def test_source_format_and_quant(name: str, fmt: str, quant: str | None) -> None:
    r = resolve(name, CATALOG)
    assert (r.source_format, r.quant) == (fmt, quant)


def test_reasons_say_why() -> None:
    assert "no 13b model" in resolve("llama3.1:13b", CATALOG).reason
    assert "8b, 70b, 405b" in resolve("llama3.1:13b", CATALOG).reason
    assert "'math'" in resolve("qwen2.5-math:7b", CATALOG).reason
    assert "several sizes" in resolve("qwen2.5-coder", CATALOG).reason
    assert "no known model family" in resolve("unknown-model:1b", CATALOG).reason
    assert "Ollama's default" in resolve("qwen2.5-coder:latest", CATALOG).reason
    assert "alias" in resolve("codellama-34b-instruct", CATALOG).reason
    assert "directory" in resolve("/m/qwen2.5-coder-7b/model-q4_0.gguf", CATALOG).reason


def test_variant_mismatch_is_noted_not_rejected() -> None:
    r = resolve("codellama:7b-code", CATALOG)
    assert r.model_id == "codellama-7b"
    assert r.variant == "code"
    assert "describes instruct" in r.reason
    assert "describes" not in resolve("gemma-2-9b-it", CATALOG).reason


def test_deepseek_r1_plain_versus_ollama_latest() -> None:
    assert resolve("deepseek-r1", CATALOG).model_id == "deepseek-r1"
    assert resolve("deepseek-r1:latest", CATALOG).model_id == "deepseek-r1-distill-8b"
    # Every Ollama deepseek-r1 tag below 671b is a distill, never the 671B model.
    for size in ("1.5b", "7b", "8b", "14b", "32b", "70b"):
        assert resolve(f"deepseek-r1:{size}", CATALOG).model_id != "deepseek-r1"


def test_size_hint_decides_when_the_name_gives_no_size() -> None:
    r = resolve("qwen2.5-coder:latest", CATALOG, size_hint_b=14.8)
    assert (r.model_id, r.matched_by) == ("qwen2.5-coder-14b", "hint")
    # Ollama's parameter_size counts differently from the label ("9.8B" for the 11B vision).
    assert resolve("llama3.2-vision:latest", CATALOG, size_hint_b=9.8).model_id == (
        "llama-3.2-11b-vision"
    )
    assert resolve("codestral", CATALOG, size_hint_b=7.2).model_id is None
    # A size in the name wins over the hint.
    assert resolve("codellama:13b", CATALOG, size_hint_b=7.0).model_id == "codellama-13b"
    # Nonsense hints are ignored.
    assert resolve("phi4:latest", CATALOG, size_hint_b=-1).model_id == "phi-4"
    assert resolve("phi4:latest", CATALOG, size_hint_b=float("nan")).model_id == "phi-4"


def test_hint_overrides_an_id_of_another_size() -> None:
    # A server that calls its 7B distill "deepseek-r1" (an alias) and reports 7.6B.
    r = resolve("deepseek-r1", CATALOG, size_hint_b=7.6)
    assert r.model_id == "deepseek-r1-distill-7b"


def test_resolve_all_keeps_order_and_uses_hints() -> None:
    out = resolve_all(
        ["phi4:latest", "nope", "qwen3:latest"], CATALOG, size_hints={"qwen3:latest": 4.0}
    )
    assert [r.model_id for r in out] == ["phi-4", None, "qwen3-4b"]


def test_resolution_encodes_for_routerctl_json() -> None:
    out = msgspec.json.decode(msgspec.json.encode(resolve_all(["phi4:latest", "x"], CATALOG)))
    assert out[0]["name"] == "phi4:latest" and out[0]["model_id"] == "phi-4"
    assert out[1]["model_id"] is None and out[1]["reason"]
    assert msgspec.convert(out[0], Resolution).model_id == "phi-4"


def test_every_entry_resolves_by_its_id_and_aliases() -> None:
    for entry in CATALOG:
        assert resolve(entry.id, CATALOG).model_id == entry.id
        assert resolve(entry.id.upper().replace("-", "_"), CATALOG).model_id == entry.id
        for alias in entry.aliases:
            assert resolve(alias, CATALOG).model_id == entry.id


def test_every_family_and_size_resolves_as_an_ollama_tag() -> None:
    for entry in CATALOG:
        got = resolve(f"{entry.family}:{entry.size}", CATALOG).model_id
        assert got == entry.id, (entry.family, entry.size)


# --- properties -----------------------------------------------------------------------------

_NAMES = [name for name, _ in CASES]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    r = resolve(text, CATALOG)
    assert r.name == text
    assert r.reason
    assert r.model_id is None or r.model_id in CATALOG


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_NAMES), st.randoms(use_true_random=False))
def test_case_does_not_matter(name: str, rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    flipped = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in name)
    assert resolve(flipped, CATALOG).model_id == resolve(name, CATALOG).model_id


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([e.id for e in CATALOG]), st.sampled_from(["-", "_", " ", "--", " _ "]))
def test_separators_do_not_matter(model_id: str, sep: str) -> None:
    # A dot is a separator too, except between two digits, where it is a decimal point
    # ("qwen2.5"), and "/" and ":" mark an organisation and a tag, so none is a free
    # substitute for "-" here.
    name = model_id.replace("-", sep)
    assert resolve(name, CATALOG).model_id == model_id


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted({e.family for e in CATALOG})),
    st.floats(min_value=0.05, max_value=1000, allow_nan=False).map(lambda x: round(x, 1)),
)
def test_a_written_size_never_matches_another_size(family: str, size: float) -> None:
    label = f"{size:g}b"
    r = resolve(f"{family}:{label}", CATALOG)
    if r.model_id is None:
        return
    entry = CATALOG[r.model_id]
    values = [entry.params_b]
    for lab in (entry.size, *entry.size_aliases):
        parsed = parse_size(lab)
        if parsed is not None and parsed[1] is not None:
            values.append(parsed[1])
    assert any(abs(size - v) <= NAME_TOLERANCE * v + 1e-9 for v in values), (label, entry.id)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:/@ "))
def test_parse_ignores_case(text: str) -> None:
    assert parse_name(text).key == parse_name(text.swapcase()).key
