"""Feature extraction for the request classifier: text in, a list of named features out.

Invariants:
- Pure and deterministic: the same text always gives the same features in the same order,
  each named at most once.
- Bounded: at most HEAD_CHARS from the start and TAIL_CHARS from the end of the text are read,
  and cue words come only from the "ask" (the first paragraph, plus a short last paragraph),
  capped at ASK_CHARS. The cost does not depend on the length of the text beyond that.
- Feature names are short and stable, because they are keys in the trained weight table
  (classify_weights.py) and they are returned as the signals that decided a classification.
  Prefixes: ``cue:`` a word group from the lexicon, ``ask:`` the form of the question,
  ``shape:`` the shape of pasted material (code, traces, diffs, logs), ``mix:`` a conjunction of
  two of these, ``ref:`` a reference to workspace code (used for the Serena decision),
  ``rule:`` a fixed rule rather than a learned weight (never trained on).
"""

from __future__ import annotations

import re
from itertools import compress
from typing import Final

HEAD_CHARS: Final = 2048
TAIL_CHARS: Final = 256
ASK_CHARS: Final = 320
LAST_PARA_CHARS: Final = 160
MAX_TOKENS: Final = 48
SHAPE_CHARS: Final = 1024
#: A rule feature, not a learned one: the request navigates symbols, so Serena is required.
NAVIGATE: Final = "rule:navigate"


def _groups(table: dict[str, str]) -> dict[str, str]:
    """Expand {"feature": "word word ..."} into {"word": "feature"}; a word has one group."""
    out: dict[str, str] = {}
    for feature, words in table.items():
        for word in words.split():
            if word in out:
                raise ValueError(f"{word!r} is in both {out[word]} and {feature}")
            out[word] = feature
    return out


# One word, one group. The groups follow the labeling guideline in tests/data/classify/README.md;
# the weights of each group per category are learned (bench/train_classify.py).
_UNIGRAMS: Final = _groups(
    {
        "cue:create": "write create implement impl generate build code scaffold complete give "
        "schreibe erstelle escribe crea crear écris ecris escreva",
        "cue:add": "add",
        "cue:make": "make",
        "cue:fix": "fix fixed fixing debug solve resolve patch repair workaround",
        "cue:change": "refactor rename extract move convert port migrate swap replace rewrite "
        "simplify vectorize wrap turn cleanup clean optimize speed paginate debounce",
        "cue:artifact": "function script regex query hook dockerfile makefile workflow cmd command "
        "liner oneliner endpoint middleware migration snippet program component target probe cli "
        "funktion función fonction",
        "cue:test": "test tests pytest unittest jest",
        "cue:failure": "error errors exception exceptions traceback fails failing failed fail "
        "crash crashes crashing broken broke doesnt doesn't undefined npe segfault panic panics "
        "err cannot twice",
        "cue:compare": "than compared comparison compare despite",
        "cue:howto": "u wie cómo como",
        "cue:choice": "vs versus or either alternatives options alternative oder ou",
        "cue:should": "should shall shouldn't ought sollte sollten debería deberíamos devrait",
        "cue:worth": "worth overkill premature sane sensible reasonable idea pros cons tradeoff "
        "tradeoffs downside downsides acceptable appropriate misuse early viable wise",
        "cue:best": "best better smartest ideal recommend recommended suggest prefer choose "
        "choosing pick picking decide deciding decision debating argument besser mejor meilleur "
        "mieux",
        "cue:design": "design designing architect architecture architectural plan planning "
        "strategy approach structure structuring shard sharding scale scaling rollout tenancy "
        "consistency boundary abstraction system systems model",
        "cue:why": "why",
        "cue:opinion": "thoughts opinion think thinking intuition reasoning consider considering "
        "sense",
        "cue:infra": "service services microservices monorepo polyrepo db database databases "
        "postgres mongo mongodb mysql sqlite redis kafka rabbitmq queue queues cluster team tenant "
        "tenants replicas grpc rest graphql dynamodb celery",
        "cue:review": "review reviewing audit auditing inspect assess evaluate critique harsh rate "
        "sanity findings vet lint linter warning warnings flagged analyze analyse analysis "
        "analyzing analysiere analysieren prüfe überprüfe analiza analizar revisa vérifie verifica",
        "cue:check": "check verify scan confirm",
        "cue:risk": "leak leaks leaking leaky race races racy deadlock safe unsafe secure insecure "
        "security vulnerable vulnerability vulnerabilities injection xss csrf secrets secret "
        "overflow backtracking stampede idempotent timing exploit sanitized sanitize permissions "
        "attack hardcoded password passwords credentials sicherheitslücken sicherheitslücke "
        "sicherheit seguridad sécurité vulnerabilidad",
        "cue:correct": "correct correctness edge wrong issues problems smell smells noise lurking "
        "reachable ever anywhere path modes bite happen happens break breaks breaking impact "
        "swallow suspect",
        "cue:usage": "calls callers usages depends dependents cover covers coverage unused dead "
        "references referenced",
        "cue:perf": "slow slower slowness bottleneck profile profiler profiling hot latency "
        "throughput memory growing ratio complexity allocating allocation allocations p50 p99 cpu",
        "cue:docs": "doc docs documentation document documented docstring docstrings jsdoc javadoc "
        "tsdoc readme changelog adr contributing wiki guide onboarding manual man comment comments "
        "annotate annotated hints notes description paragraph section badges dokumentation "
        "documentación kommentare comentarios commentaires",
        "cue:explain": "explain explaining explanation eli5 describe describing summarize summary "
        "tldr meaning mean means purpose point walk junior beginner understand doing erkläre "
        "erklären explique explica explícame fait hace macht bedeutet signifie significa",
        "cue:syntax": "syntax operator flag flags keyword macro decorator decorators statement "
        "columns",
        "cue:scale": "users rows rps qps engineers devs hosts customers nodes consumers partitions "
        "gb tb million billion",
        "cue:tech": "python go golang rust java javascript js typescript ts bash sh shell sql "
        "react express django flask fastapi pandas numpy k8s kubernetes docker terraform nginx jq "
        "ffmpeg cmake git npm cargo haskell php node",
    }
)

# Two-word cues: first word -> second word -> feature.
_BIGRAMS: Final[dict[str, dict[str, str]]] = {
    "how": {
        "to": "ask:how-to",
        "do": "ask:how-do",
        "can": "ask:how-to",
        "does": "ask:how-does",
        "should": "ask:how-should",
        "would": "ask:how-should",
        "many": "ask:how-much",
        "much": "ask:how-much",
    },
    "what": {
        "does": "ask:what-does",
        "do": "ask:what-does",
        "is": "ask:what-is",
        "are": "ask:what-is",
        "could": "ask:what-could",
        "might": "ask:what-could",
        "happens": "ask:what-could",
        "breaks": "ask:what-could",
        "would": "ask:what-could",
    },
    "what's": {
        "the": "ask:what-is",
        "this": "ask:what-does",
        "wrong": "ask:what-wrong",
        "a": "ask:what-is",
    },
    "whats": {"the": "ask:what-is", "this": "ask:what-does", "wrong": "ask:what-wrong"},
    "is": {
        "it": "ask:is-it",
        "this": "ask:is-this",
        "there": "ask:is-this",
        "our": "ask:is-this",
        "the": "ask:is-this",
        "anything": "ask:is-this",
    },
    "are": {"there": "ask:is-this", "these": "ask:is-this", "the": "ask:is-this"},
    "does": {
        "this": "ask:is-this",
        "anything": "ask:is-this",
        "the": "ask:is-this",
        "it": "ask:is-it",
    },
    "can": {"this": "ask:is-this", "you": "ask:can-you", "u": "ask:can-you"},
    "could": {"this": "ask:is-this"},
    "will": {"this": "ask:is-this"},
    "any": {"race": "cue:risk", "places": "ask:is-this"},
    "who": {"calls": "cue:usage", "uses": "cue:usage"},
    "which": {"tests": "cue:usage", "is": "cue:best", "one": "cue:best"},
    "go": {"wrong": "ask:what-could"},
    "trade": {"off": "cue:worth", "offs": "cue:worth"},
    "code": {"review": "cue:review"},
    "double": {"check": "cue:review"},
    "look": {"over": "cue:review", "at": "cue:check"},
    "commit": {"message": "cue:docs"},
    "release": {"notes": "cue:docs"},
    "help": {"text": "cue:docs"},
    "type": {"hints": "cue:docs"},
    "pr": {"description": "cue:docs"},
    "difference": {"between": "ask:difference"},
    "unit": {"tests": "cue:write-tests"},
    "tests": {"for": "cue:write-tests"},
    "test": {"for": "cue:write-tests"},
    "pytest": {"for": "cue:write-tests"},
    "when": {"does": "ask:how-should", "should": "ask:how-should"},
    "make": {"sense": "cue:worth", "this": "cue:change", "it": "cue:change"},
    "makes": {"sense": "cue:worth"},
    "thread": {"safe": "cue:risk"},
    "time": {"going": "cue:perf"},
    "walk": {"me": "cue:explain"},
    "clean": {"up": "cue:change"},
    "one": {"liner": "cue:artifact"},
    "not": {"working": "cue:failure"},
    "too": {"early": "cue:worth", "broad": "cue:risk"},
}

# First-word forms of the ask.
_FIRST: Final = _groups(
    {
        "ask:imperative-make": "write create implement impl generate build make add complete "
        "convert port migrate turn swap move extract rename refactor wrap paginate debounce handle "
        "stop sort fix debug",
        "ask:imperative-doc": "document explain describe summarize annotate eli5 tl",
        "ask:imperative-review": "review audit check scan identify find assess analyze analyse "
        "sanity tell rate",
        "ask:yes-no": "is does can could are will would any",
    }
)

# Literal alternations: re scans for their first characters in C.
_ERROR: Final = re.compile(
    r"Error|Exception|error[:\[]|FAILED|ERR!|panic:|fatal error|Segmentation fault|ERROR"
)
_TOPIC: Final = re.compile(r"[\w .+#/-]{1,20}:\s")
_CLOCK: Final = re.compile(r"\d\d:\d\d:\d\d")
_SNAKE: Final = re.compile(r"[a-z0-9]_[a-z0-9]")
_CAMEL: Final = re.compile(r"[a-z][A-Z]")  # getUser, OrderService
_FILE: Final = re.compile(
    r"\.(?:py|pyi|ts|tsx|js|jsx|rs|go|java|kt|c|h|cc|cpp|rb|php|cs|toml|ya?ml|json|txt|md"
    r"|cfg|ini|sh)\b"
)
_PATH: Final = re.compile(r"[a-z_]/")
_SCOPE: Final = frozenset(
    {
        "codebase",
        "repo",
        "repository",
        "everywhere",
        "anywhere",
        "module",
        "package",
        "handler",
        "endpoint",
        "worker",
        "scheduler",
        "loader",
        "client",
        "layer",
        "our",
        "view",
        "path",
        "callers",
        "calls",
        "usages",
    }
)
# The seed's rule: symbol navigation always needs Serena. Phrases "where is", "find all",
# "go to" and "jump to" count too (substring tests: they must not consume learned pairs).
_NAVIGATE: Final = frozenset(
    {"definition", "definitions", "defined", "symbol", "symbols", "rename", "references"}
)
_NAVIGATE_ANY: Final = _NAVIGATE | {"where", "find", "go", "jump"}
_ENDS_DO: Final = frozenset(("do", "mean", "for", "return", "returns"))


def _ask_features(ask: str, seen: dict[str, None]) -> None:
    """Add the features of the ask (the user's own words) to ``seen``."""
    if "\u2019" in ask:
        ask = ask.replace("\u2019", "'")
    # Separators besides whitespace. Chained replaces and a split are several times faster
    # than a tokenizing regex, and speed is part of the contract.
    words = (
        ask.replace("?", " ")
        .replace(",", " ")
        .replace(".", " ")
        .replace(":", " ")
        .replace("(", " ")
        .replace(")", " ")
        .replace("`", " ")
        .replace("/", " ")
        .replace("-", " ")
        .replace('"', " ")
        .replace(";", " ")
    )
    low = words.lower()
    toks = low.split()
    if len(toks) > MAX_TOKENS:
        del toks[MAX_TOKENS:]
    if toks:
        first = _FIRST.get(toks[0])
        if first is not None:
            seen[first] = None
        # Word groups by dictionary lookups in C (map/filter); Python visits only the words
        # that start a known pair (compress).
        for f in filter(None, map(_UNIGRAMS.get, toks)):
            seen[f] = None
        consumed = -1
        for i in compress(range(len(toks) - 1), map(_BIGRAMS.__contains__, toks)):
            if i == consumed:
                continue  # a word ends at most one pair: "how does the" is not "does the"
            pair = _BIGRAMS[toks[i]].get(toks[i + 1])
            if pair is None:
                continue
            if pair == "ask:how-do":
                # "how do I / you" asks for code; "how do we" asks for a plan.
                we = i + 2 < len(toks) and toks[i + 2] == "we"
                pair = "ask:how-should" if we else "ask:how-to"
            seen[pair] = None
            consumed = i + 1
        if toks[-1] in _ENDS_DO:
            seen["ask:ends-do"] = None
        if not _SCOPE.isdisjoint(toks):
            seen["ref:scope"] = None
        if not _NAVIGATE_ANY.isdisjoint(toks) and (
            not _NAVIGATE.isdisjoint(toks)
            or "where is" in low
            or "find all" in low
            or "go to" in low
            or "jump to" in low
        ):
            seen[NAVIGATE] = None
    if "?" in ask:
        seen["ask:question"] = None
    if len(toks) <= 6:
        seen["shape:terse"] = None
        if "ask:what-is" in seen:
            seen["mix:what-is+terse"] = None
    if "`" in ask:
        seen["shape:inline-code"] = None
    if ":" in ask and _TOPIC.match(ask.lower()) is not None:
        seen["shape:topic-prefix"] = None

    # References to workspace code: the Serena decision leans on these. Each regex runs only
    # when a cheap test says it could match.
    if "." in ask and _FILE.search(ask) is not None:
        seen["ref:file"] = None
    if "/" in ask and _PATH.search(ask) is not None:
        seen["ref:path"] = None
    if (
        "()" in ask
        or ("_" in ask and _SNAKE.search(ask) is not None)
        or (low != words and _CAMEL.search(ask) is not None)
    ):
        seen["ref:ident"] = None


def _code_mixes(seen: dict[str, None]) -> None:
    """Conjunctions with pasted code that the linear model cannot express on its own."""
    if "ask:is-this" in seen or "ask:yes-no" in seen:
        seen["mix:yes-no+code"] = None
    if "ask:what-does" in seen or "cue:explain" in seen:
        seen["mix:explain+code"] = None
    if "cue:why" in seen:
        seen["mix:why+code"] = None


def _maybe_error(body: str) -> bool:
    """Cheap pre-test for _ERROR: most requests contain none of these."""
    return (
        "rror" in body or "xception" in body or "FAIL" in body or "ERR" in body or "panic:" in body
    )


def extract_features(text: str) -> list[str]:
    """Return the named features of a request, in a deterministic order, without repeats."""
    return list(feature_set(text))


def feature_set(text: str) -> dict[str, None]:
    """The features of ``text`` as an insertion-ordered set (dict keys): extract_features
    without the copy, for the classifier's hot path."""
    if len(text) <= HEAD_CHARS:
        body = text.strip()
    else:
        body = (text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]).strip()
    seen: dict[str, None] = {}  # an insertion-ordered set
    if not body:
        return seen

    if "\n" not in body:
        # One line, the common case: the ask is all there is.
        _ask_features(body[: ASK_CHARS + LAST_PARA_CHARS], seen)
        if body.count("(") + body.count("=") + body.count(";") + body.count("{") >= 3:
            seen["shape:snippet"] = None
            _code_mixes(seen)
        elif "ask:question" in seen and "cue:why" in seen and "cue:infra" not in seen:
            seen["mix:why-no-code"] = None
        if _maybe_error(body) and _ERROR.search(body, 0, SHAPE_CHARS) is not None:
            seen["shape:error"] = None
        return seen

    # The ask: the first paragraph, plus a short last paragraph (a question after a paste).
    cut = body.find("\n\n")
    if cut < 0:
        ask = body[: ASK_CHARS + LAST_PARA_CHARS]
    else:
        ask = body[: min(cut, ASK_CHARS)]
        tail = body[body.rfind("\n\n") + 2 :]
        if len(tail) <= LAST_PARA_CHARS and "\n" not in tail:
            ask = ask + "\n" + tail
    _ask_features(ask, seen)

    # Shapes of pasted material, from the bounded body.
    fence = "```" in body
    lines = body.count("\n")
    indented = body.count("\n ") + body.count("\n\t")
    punct = body.count(";") + body.count("{") + body.count("=") + body.count("(")
    code = fence or indented >= 2 or (lines >= 2 and punct >= 4)
    if fence:
        seen["shape:fence"] = None
    if code:
        seen["shape:code"] = None
        _code_mixes(seen)
    elif punct >= 3:
        seen["shape:snippet"] = None
        _code_mixes(seen)
    elif "ask:question" in seen and "cue:why" in seen and "cue:infra" not in seen:
        seen["mix:why-no-code"] = None
    if lines >= 2:
        # Substring tests: a regex alternation here costs several times more.
        if "\n@@ " in body or "\n+++ " in body or "--- a/" in body:
            seen["shape:diff"] = None
        if (
            '", line ' in body
            or "\n\tat " in body
            or "\n    at " in body
            or "Traceback (most" in body
        ):
            seen["shape:traceback"] = None
    if _maybe_error(body) and _ERROR.search(body, 0, SHAPE_CHARS) is not None:
        seen["shape:error"] = None
    if lines >= 3 and body.count(":") >= 6 and _CLOCK.search(body, 0, SHAPE_CHARS) is not None:
        seen["shape:log"] = None
    if cut >= 0 and not code and len(body) > 200:
        seen["shape:long-prose"] = None
    return seen
