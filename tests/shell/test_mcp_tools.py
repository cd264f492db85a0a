"""routerd-mcp's tool table and results (routerd/mcp_bridge/tools.py), without a daemon."""

from __future__ import annotations

import msgspec
import pytest

from routerd.mcp_bridge.tools import (
    STATIC_TOOLS,
    AskArgs,
    SerenaCallArgs,
    ask_result,
    decode_args,
    error_result,
    serena_tool,
)


def test_every_fixed_tool_has_a_flat_object_schema_with_descriptions() -> None:
    for spec in STATIC_TOOLS:
        schema = spec.tool().input_schema
        assert schema["type"] == "object" and "$ref" not in str(schema), spec.name
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (spec.name, name)
    names = [spec.name for spec in STATIC_TOOLS]
    assert len(set(names)) == len(names)


def test_null_means_not_given_and_unknown_arguments_are_refused() -> None:
    args = decode_args(AskArgs, {"query": "q", "model": None, "max_tokens": 5})
    assert args.model is msgspec.UNSET and args.max_tokens == 5
    with pytest.raises(msgspec.ValidationError, match="unknown field `modle`"):
        decode_args(AskArgs, {"query": "q", "modle": "x"})
    with pytest.raises(msgspec.ValidationError, match=r"\$\.query"):
        decode_args(AskArgs, {"query": ""})
    with pytest.raises(msgspec.ValidationError, match="category"):
        decode_args(AskArgs, {"query": "q", "category": "poetry"})
    assert decode_args(SerenaCallArgs, {"tool": "find_symbol", "arguments": None}).arguments == {}


def test_an_error_carries_code_message_and_the_daemons_explanation() -> None:
    result = error_result("not_found", "no model 'x'", {"explain": ["a: offline", "b: too small"]})
    assert result.is_error
    assert [c.text for c in result.content] == [  # type: ignore[union-attr]
        "routerd error not_found: no model 'x'\na: offline\nb: too small"
    ]
    assert result.structured_content == {
        "error": {"code": "not_found", "message": "no model 'x'",
                  "data": {"explain": ["a: offline", "b: too small"]}}
    }  # fmt: skip


def test_an_incomplete_answer_says_why_it_broke_off() -> None:
    end = {"finish_reason": "incomplete", "reason": "the server stalled", "model": "m",
           "service": "s", "category": "coding"}  # fmt: skip
    result = ask_result("partial", end, None, "")
    texts = [c.text for c in result.content]  # type: ignore[union-attr]
    assert texts[0] == "partial"
    assert (
        texts[1]
        == "[answered by m on s, category coding] The answer broke off: the server stalled."
    )
    assert not result.is_error


def test_a_serena_tool_without_an_object_schema_gets_an_empty_one() -> None:
    tool = serena_tool({"name": "odd", "input_schema": {"type": "string"}, "writes": True}, "/p")
    assert tool.name == "serena_odd"
    assert tool.input_schema == {"type": "object", "properties": {}}
    assert tool.annotations is not None and tool.annotations.destructive_hint is True
