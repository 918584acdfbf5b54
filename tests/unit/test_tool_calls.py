"""The tool-call parser on streamed text, one character at a time, for every syntax."""

from __future__ import annotations

import json

import pytest

from modelserve.runtime.tools import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    CallSyntax,
    ToolCallStream,
    syntax_for,
)

NAMES = frozenset({"f", "g"})


def feed(syntax: CallSyntax, text: str) -> tuple[str, list[tuple[str, dict[str, object]]]]:
    stream = ToolCallStream(syntax, NAMES)
    content = ""
    calls = []
    for char in text:
        released, done = stream.push(char)
        content += released
        calls += done
    content += stream.finish()
    return content, [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize(
    ("syntax", "text", "content", "calls"),
    [
        (
            HERMES,
            'Sure.<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
            "Sure.",
            [("f", {"a": 1})],
        ),
        (
            HERMES,
            '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {"b": "<"}}\n</tool_call>',
            "\n",
            [("f", {}), ("g", {"b": "<"})],
        ),
        (HERMES, "a <tool plain text", "a <tool plain text", []),
        (HERMES, '<tool_call>\n{"name": "f", "argu', '<tool_call>\n{"name": "f", "argu', []),
        (
            MISTRAL,
            '[TOOL_CALLS] [{"name": "f", "arguments": {"x": [1]}}, {"name": "g", "arguments": {}}]',
            "",
            [("f", {"x": [1]}), ("g", {})],
        ),
        (LLAMA3, '{"name": "g", "parameters": {"z": true}}', "", [("g", {"z": True})]),
        (LLAMA3, '<|python_tag|>{"name": "g", "parameters": {}}', "", [("g", {})]),
        (
            LLAMA3,
            'No call: {"name": "g", "parameters": {}}',
            'No call: {"name": "g", "parameters": {}}',
            [],
        ),
    ],
    ids=[
        "hermes",
        "hermes-two",
        "hermes-not-a-tag",
        "hermes-unfinished",
        "mistral",
        "llama3",
        "llama3-tag",
        "llama3-late",
    ],
)
def test_streamed_parsing(
    syntax: CallSyntax, text: str, content: str, calls: list[tuple[str, dict[str, object]]]
) -> None:
    assert feed(syntax, text) == (content, calls)


def test_undeclared_functions_are_not_calls() -> None:
    assert feed(HERMES, '<tool_call>\n{"name": "h", "arguments": {}}\n</tool_call>')[1] == []


def test_templates_choose_their_syntax() -> None:
    assert syntax_for("{{ '<tool_call>' }}") is HERMES
    assert syntax_for("[TOOL_CALLS] [") is MISTRAL
    assert syntax_for("<|start_header_id|>ipython") is LLAMA3
    assert syntax_for("{{ messages }}") is GENERIC


def test_schema_strings_exclude_raw_control_characters() -> None:
    """JSON forbids them; llama-cpp-python's converter would let a model write them."""
    from modelserve.runtime.grammar import schema_grammar

    assert '[^"\\\\\\x7F\\x00-\\x1F]' in schema_grammar({"type": "string"})
