"""The seed's request classifier, re-implemented faithfully as a baseline for bench/classify.py.

Behaviour follows the seed design sketch (patterns, keyword weights, the 0.2 threshold that
falls back to coding at confidence 0.5, and the Serena rule), including its quirks: keywords
count once per occurrence, "tradeoff" never matches "trade-off", and patterns are searched
afresh on every call through re's cache. It is a yardstick only, never imported by routerd.
"""

from __future__ import annotations

import re

PATTERNS: dict[str, list[str]] = {
    "coding": [
        r"(?:write|create|implement|code|generate)\s+(?:a\s+)?(?:function|class|method|component)",
        r"(?:fix|debug|solve)\s+(?:this|the)\s+(?:bug|error|issue)",
        r"refactor\s+(?:this|the)",
        r"add\s+(?:error\s+handling|validation|logging|tests?)",
        r"complete\s+(?:this|the)\s+code",
        r"(?:convert|translate)\s+(?:this|the)\s+code",
        r"(?:optimize|improve)\s+(?:this|the)\s+(?:function|code|performance)",
    ],
    "reasoning": [
        r"(?:design|architect|plan)\s+(?:a|the)\s+(?:system|architecture|solution)",
        r"how\s+should\s+(?:I|we)\s+(?:approach|structure|implement)",
        r"what\s+(?:is|would\s+be)\s+the\s+best\s+(?:way|approach|pattern)",
        r"explain\s+the\s+(?:logic|reasoning|algorithm)",
        r"compare\s+(?:and\s+contrast|between)",
        r"(?:recommend|suggest)\s+(?:an?\s+)?(?:approach|solution|pattern)",
        r"trade-?offs?\s+(?:between|of)",
    ],
    "analysis": [
        r"(?:review|analyze|audit)\s+(?:this|the)\s+code",
        r"find\s+(?:potential\s+)?(?:issues|vulnerabilities|bugs|problems)",
        r"(?:security|performance)\s+(?:review|analysis|audit)",
        r"what\s+(?:could|might)\s+go\s+wrong",
        r"identify\s+(?:problems|improvements|issues)",
        r"(?:check|scan)\s+for\s+(?:vulnerabilities|issues)",
    ],
    "documentation": [
        r"(?:write|create|generate)\s+(?:documentation|docs|docstring)",
        r"(?:add|write)\s+(?:comments|jsdoc|docstring|type\s+hints)",
        r"(?:document|explain)\s+(?:this|the)\s+(?:code|function|api)",
        r"(?:create|write)\s+(?:a\s+)?readme",
        r"(?:generate|write)\s+(?:api\s+)?documentation",
        r"describe\s+(?:what|how)\s+(?:this|the)",
    ],
}

KEYWORD_WEIGHTS: dict[str, tuple[str, float]] = {
    "function": ("coding", 0.3),
    "implement": ("coding", 0.4),
    "code": ("coding", 0.2),
    "debug": ("coding", 0.5),
    "refactor": ("coding", 0.6),
    "fix": ("coding", 0.4),
    "test": ("coding", 0.3),
    "bug": ("coding", 0.5),
    "architecture": ("reasoning", 0.6),
    "design": ("reasoning", 0.4),
    "approach": ("reasoning", 0.3),
    "strategy": ("reasoning", 0.5),
    "tradeoff": ("reasoning", 0.5),
    "compare": ("reasoning", 0.4),
    "recommend": ("reasoning", 0.4),
    "review": ("analysis", 0.5),
    "analyze": ("analysis", 0.6),
    "security": ("analysis", 0.4),
    "vulnerability": ("analysis", 0.7),
    "performance": ("analysis", 0.3),
    "audit": ("analysis", 0.6),
    "document": ("documentation", 0.6),
    "readme": ("documentation", 0.8),
    "docstring": ("documentation", 0.8),
    "comment": ("documentation", 0.4),
    "explain": ("documentation", 0.3),
}

_SERENA_WORDS = (
    "definition",
    "reference",
    "symbol",
    "rename",
    "where is",
    "find all",
    "go to",
    "jump to",
)


def seed_classify(query: str) -> tuple[str, float, bool, list[str]]:
    """Return (category, confidence, requires_serena, keywords_matched) as the seed does."""
    query_lower = query.lower()
    scores = {cat: 0.0 for cat in PATTERNS}
    matched: list[str] = []
    for category, patterns in PATTERNS.items():
        for pattern in patterns:
            if re.search(pattern, query_lower):
                scores[category] += 0.5
    for word in re.findall(r"\w+", query_lower):
        if word in KEYWORD_WEIGHTS:
            category, weight = KEYWORD_WEIGHTS[word]
            scores[category] += weight * 0.5
            matched.append(word)
    best = max(scores, key=lambda c: scores[c])
    confidence = min(scores[best], 1.0)
    if confidence < 0.2:
        best = "coding"
        confidence = 0.5
    requires_serena = best == "analysis" or any(kw in query_lower for kw in _SERENA_WORDS)
    return best, confidence, requires_serena, matched
