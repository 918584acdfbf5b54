"""Function calling: which call syntax a chat template teaches, parsing it, forcing it.

Models write tool calls in their family's syntax, and the GGUF's chat template
shows which one (it renders the tools and past calls in it):

- Hermes-style, used by Qwen 2.5 and 3: ``<tool_call>{"name", "arguments"}</tool_call>``,
  one block per call;
- Mistral: ``[TOOL_CALLS][{"name", "arguments"}, ...]``;
- Llama 3.x: a bare ``{"name", "parameters"}`` object (after ``<|python_tag|>``
  in some versions).

A template that shows none of them gets the Hermes syntax, and the tools are
described to the model in a system message since its template cannot. The
parser works on a stream: text that cannot be the start of a call goes out as
content at once; a call goes out as soon as its JSON is complete. When
``tool_choice`` forces a call, a grammar (GBNF from the functions' schemas)
makes the output a valid call of a declared function.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelserve.runtime.grammar import schema_rules

MAX_FORCED_CALLS = 8
"""Calls a forced answer may hold; a model that never closes its list stops there."""


MAX_FORCED_CALLS = 8
"""Calls a forced answer may hold; a model that never closes its list stops there."""


@dataclass(frozen=True)
class CallSyntax:
    """How one model family writes tool calls."""

    name: str
    start: str  # what opens a call ("" : a JSON object at the very start)
    end: str  # what closes one call ("" : nothing)
    arguments_key: str
    in_list: bool  # the calls are one JSON array after ``start``

    def grammar(self, tools: Sequence[dict[str, Any]], parallel: bool) -> str:
        """GBNF for one call (or, when ``parallel``, several) of the given functions."""
        calls = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool["name"]},
                    self.arguments_key: tool.get("parameters") or {"type": "object"},
                },
                "required": ["name", self.arguments_key],
            }
            for tool in tools
        ]
        schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
        rules = schema_rules(schema, "call")
        more = f"{{0,{MAX_FORCED_CALLS - 1}}}"
        if self.in_list:
            extra = f' ("," call){more}' if parallel else ""
            root = f'root ::= {_literal(self.start)} "[" call{extra} "]"'
        elif self.start:
            one = f"{_literal(self.start)} call {_literal(self.end)}"
            root = f"root ::= {one}" + (f' ("\\n" {one}){more}' if parallel else "")
        else:
            root = "root ::= call"
        return f"{root}\n{rules}"


PYTHON_TAG = "<|python_tag|>"
HERMES = CallSyntax("hermes", "<tool_call>\n", "\n</tool_call>", "arguments", in_list=False)
MISTRAL = CallSyntax("mistral", "[TOOL_CALLS] ", "", "arguments", in_list=True)
LLAMA3 = CallSyntax("llama3", "", "", "parameters", in_list=False)


def syntax_for(template: str) -> CallSyntax:
    """The call syntax a chat template teaches its model."""
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if "<|python_tag|>" in template or "ipython" in template:
        return LLAMA3
    return HERMES


def template_knows_tools(template: str) -> bool:
    return "tools" in template


def tools_system_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """How a model whose template has no place for tools hears of them."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You may call functions. The functions are:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call one, answer with "
        '<tool_call>\n{"name": <function name>, "arguments": <arguments object>}\n</tool_call>'
    )


def _literal(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid GBNF literal


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallStream:
    """Splits one choice's streamed text into content and complete tool calls."""

    syntax: CallSyntax
    names: frozenset[str]
    calls: list[dict[str, Any]] = field(default_factory=list)
    _buffer: str = ""
    _in_call: bool = False
    _sent_content: bool = False

    def push(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Content that can go out now, and the calls completed by ``text``."""
        self._buffer += text
        content, calls = "", []
        while True:
            if not self._in_call:
                released, opened = self._open()
                content += released
                if not opened:
                    break
            parsed = self._close()
            if parsed is None:
                break
            calls += parsed
        self._sent_content = self._sent_content or bool(content.strip())
        return content, calls

    def finish(self) -> str:
        """What is left: an unfinished call is not a call, so it is content."""
        rest = (self.syntax.start.strip() if self._in_call else "") + self._buffer
        self._buffer, self._in_call = "", False
        return rest

    def _open(self) -> tuple[str, bool]:
        buffer, start = self._buffer, self.syntax.start
        if not start:  # Llama 3: a call is the whole answer, or it is not a call
            stripped = buffer.lstrip()
            if stripped.startswith(PYTHON_TAG):
                stripped = stripped[len(PYTHON_TAG) :]
            if self._sent_content or self.calls:
                self._buffer = ""
                return buffer, False
            if not stripped or PYTHON_TAG.startswith(stripped):
                return "", False  # too early to tell
            if stripped.startswith("{"):
                self._buffer, self._in_call = stripped, True
                return "", True
            self._buffer = ""
            return buffer, False
        at = buffer.find(start.strip())
        if at >= 0:
            self._buffer, self._in_call = buffer[at + len(start.strip()) :], True
            return buffer[:at], True
        keep = _partial_tail(buffer, start.strip())
        self._buffer = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def _close(self) -> list[dict[str, Any]] | None:
        """The calls of the open block once its JSON is complete (None: not yet)."""
        text = self._buffer.lstrip()
        if not text:
            return None
        try:
            value, used = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return None
        rest = text[used:]
        end = self.syntax.end.strip()
        if end:
            stripped = rest.lstrip()
            if len(stripped) < len(end) and end.startswith(stripped):
                return None  # the closing tag is still on its way
            if stripped.startswith(end):
                rest = stripped[len(end) :]
        self._buffer, self._in_call = rest, False
        items = value if isinstance(value, list) else [value]
        calls = [c for c in (self._call(item) for item in items) if c is not None]
        self.calls += calls
        return calls

    def _call(self, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict) or item.get("name") not in self.names:
            return None
        arguments = item.get(self.syntax.arguments_key, item.get("arguments", {}))
        return {
            "id": new_call_id(),
            "type": "function",
            "function": {
                "name": item["name"],
                "arguments": json.dumps(arguments, ensure_ascii=False),
            },
        }


def _partial_tail(text: str, marker: str) -> int:
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
