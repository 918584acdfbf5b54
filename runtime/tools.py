"""Function calling: which call syntax a chat template teaches, parsing it, forcing it.

Models write tool calls in their family's syntax, and the GGUF's chat template
shows which one (it renders the tools and past calls in it):

- Hermes-style, used by Qwen 2.5 and 3: ``<tool_call>{"name", "arguments"}</tool_call>``,
  one block per call;
- Mistral: ``[TOOL_CALLS][{"name", "arguments"}, ...]``;
- Llama 3.x: a bare ``{"name", "parameters"}`` object (after ``<|python_tag|>``
  in some versions).

A template that shows none of them gets llama-server's generic format: one JSON
object, ``{"tool_call": {"name", "arguments"}}`` (``"tool_calls": [...]`` for
several) or ``{"response": "..."}``, described to the model in a system
message (with the tools, when its template cannot render them). The
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

from modelserve.runtime.grammar import schema_grammar, schema_rules

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
    envelope: bool = False  # generic: {"tool_call": ...}, {"tool_calls": [...]}, {"response": ...}

    def markers(self) -> tuple[str, ...]:
        """The texts that open and close calls (the parser must see them in the output)."""
        found = [self.start.strip(), self.end.strip()]
        if not self.start:
            found.append(PYTHON_TAG)
        return tuple(m for m in found if m)

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
        if self.envelope:
            return schema_grammar(_envelope(schema, parallel))
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


def _envelope(call: dict[str, Any], parallel: bool) -> dict[str, Any]:
    """llama-server's generic tool-call object around ``call``'s schema."""
    if parallel:
        key = "tool_calls"
        value: dict[str, Any] = {
            "type": "array",
            "items": call,
            "minItems": 1,
            "maxItems": MAX_FORCED_CALLS,
        }
    else:
        key, value = "tool_call", call
    return {
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": False,
    }


PYTHON_TAG = "<|python_tag|>"
HERMES = CallSyntax("hermes", "<tool_call>\n", "\n</tool_call>", "arguments", in_list=False)
MISTRAL = CallSyntax("mistral", "[TOOL_CALLS] ", "", "arguments", in_list=True)
LLAMA3 = CallSyntax("llama3", "", "", "parameters", in_list=False)
GENERIC = CallSyntax("generic", "", "", "arguments", in_list=False, envelope=True)


def syntax_for(template: str) -> CallSyntax:
    """The call syntax a chat template teaches its model."""
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if "<|python_tag|>" in template or "ipython" in template:
        return LLAMA3
    return GENERIC


def template_knows_tools(template: str) -> bool:
    return "tools" in template


def generic_system_prompt(tools: Sequence[dict[str, Any]], *, list_tools: bool) -> str:
    """How a model without a known call syntax hears of the generic format (and the tools,
    when its template cannot render them)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    described = f"You may call these functions:\n{listed}\n\n" if list_tools else ""
    return (
        f"{described}Respond in JSON format, either with `tool_call` (a request to call "
        'a function: {"tool_call": {"name": <function name>, "arguments": <arguments '
        'object>}}) or with `response` (your reply to the user: {"response": <text>}).'
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
            content += parsed[0]
            calls += parsed[1]
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

    def _close(self) -> tuple[str, list[dict[str, Any]]] | None:
        """Content and calls of the open block once its JSON is complete (None: not yet)."""
        text = self._buffer.lstrip()
        if not text:
            return None
        try:
            value, used = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return None
        if self.syntax.envelope:
            return self._unwrap(value, text[:used], text[used:])
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
        return "", calls

    def _unwrap(self, value: Any, written: str, rest: str) -> tuple[str, list[dict[str, Any]]]:
        """The generic format: calls, a response's text, or (anything else) the JSON as text."""
        self._buffer, self._in_call = "", False
        envelope = value if isinstance(value, dict) else {}
        if isinstance(envelope.get("tool_calls"), list):
            items = envelope["tool_calls"]
        elif isinstance(envelope.get("tool_call"), dict):
            items = [envelope["tool_call"]]
        elif isinstance(envelope.get("response"), str):
            return envelope["response"] + rest, []
        else:
            return written + rest, []
        calls = [c for c in (self._call(item) for item in items) if c is not None]
        self.calls += calls
        return rest, calls

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
