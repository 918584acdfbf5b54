"""Engine events to OpenAI's response and chunk shapes, for every choice of a request.

One :class:`Responder` follows a request: each event (of any choice) becomes
zero or more streamed chunks, and the same bookkeeping gives the whole
response when the client did not stream, so both paths agree by construction.
Reasoning is split from the answer (``reasoning.py``) and tool calls are parsed
(``tools.py``) here as text arrives, in that order; the log-probability shapes
come from ``logprobs.py``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from modelserve.runtime.batched import Event, Usage
from modelserve.runtime.logprobs import Piece, TokenLogprob, chat_content, completion_logprobs
from modelserve.runtime.reasoning import ReasoningStream
from modelserve.runtime.tools import ToolCallStream


@dataclass
class _Choice:
    index: int
    tools: ToolCallStream | None
    reasoning: ReasoningStream | None = None
    thought: str = ""
    text: str = ""
    offset: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


class Responder:
    """Chunks and the final response of one chat or completions request."""

    def __init__(
        self,
        kind: str,
        piece: Piece,
        *,
        choices: int,
        per_prompt: int,
        logprobs: bool,
        tools: list[ToolCallStream] | None = None,
        echoes: list[str] | None = None,
        reasoning: list[ReasoningStream] | None = None,
    ) -> None:
        self.kind = kind
        self.piece = piece
        self.logprobs = logprobs
        self.per_prompt = per_prompt
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4()}"
        self.created = int(time.time())
        self.echoes = echoes or [""] * choices
        self.choices = [
            _Choice(i, tools[i] if tools else None, reasoning[i] if reasoning else None)
            for i in range(choices)
        ]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    def on_event(self, event: Event) -> list[dict[str, Any]]:
        """The chunks that stream ``event`` (possibly none)."""
        choice = self.choices[event.index]
        if event.kind == "started":
            if self.kind == "chat":
                return [self._chunk(choice, {"role": "assistant", "content": ""})]
            echo = self.echoes[event.index]
            if echo:
                choice.text += echo
                choice.offset += len(echo)
                return [self._chunk(choice, {"text": echo})]
            return []
        if event.kind == "text":
            return self._text(choice, event.text, event.logprobs)
        if event.kind == "end":
            chunks = []
            if choice.reasoning is not None:
                thought, rest = choice.reasoning.finish()
                chunks += self._text(choice, rest, (), split=False, thought=thought)
            if choice.tools is not None:
                chunks += self._text(choice, choice.tools.finish(), (), split=False, parse=False)
            reason = event.finish_reason
            if choice.tools is not None and choice.tools.calls and reason == "stop":
                reason = "tool_calls"
            choice.finish_reason = reason
            if event.usage is not None:
                if event.index % self.per_prompt == 0:
                    self.prompt_tokens += event.usage.prompt_tokens
                    self.cached_tokens += event.usage.cached_tokens
                self.completion_tokens += event.usage.completion_tokens
            empty = {} if self.kind == "chat" else {"text": ""}
            chunks.append(self._chunk(choice, empty, finish_reason=reason))
            return chunks
        return []

    def _text(
        self,
        choice: _Choice,
        text: str,
        logprobs: tuple[TokenLogprob, ...],
        *,
        split: bool = True,
        parse: bool = True,
        thought: str = "",
    ) -> list[dict[str, Any]]:
        """Chunks for ``text``: split into reasoning and answer (``split``; ``thought`` is
        reasoning split already), the answer searched for tool calls (``parse``)."""
        calls: list[dict[str, Any]] = []
        if choice.reasoning is not None and split and text:
            more, text = choice.reasoning.push(text)
            thought += more
        if choice.tools is not None and parse:
            text, calls = choice.tools.push(text)
        choice.thought += thought
        choice.text += text
        choice.logprobs += logprobs
        if not text and not calls and not logprobs and not thought:
            return []
        shaped = self._logprobs(logprobs, choice.offset) if self.logprobs else None
        choice.offset += sum(len(self.piece(e.token).decode(errors="replace")) for e in logprobs)
        if self.kind != "chat":
            return [self._chunk(choice, {"text": text}, logprobs=shaped)]
        delta: dict[str, Any] = {}
        if thought:
            delta["reasoning_content"] = thought
        if text:
            delta["content"] = text
        if calls:
            first = len(choice.tools.calls) - len(calls) if choice.tools else 0
            delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
        return [self._chunk(choice, delta, logprobs=shaped)]

    def _logprobs(self, entries: tuple[TokenLogprob, ...] | list[TokenLogprob], offset: int) -> Any:
        if self.kind == "chat":
            return {"content": chat_content(entries, self.piece), "refusal": None}
        return completion_logprobs(entries, self.piece, offset)

    def _chunk(
        self,
        choice: _Choice,
        delta: dict[str, Any],
        *,
        finish_reason: str | None = None,
        logprobs: Any = None,
    ) -> dict[str, Any]:
        if self.kind == "chat":
            part = {"index": choice.index, "delta": delta}
            obj = "chat.completion.chunk"
        else:
            part = {"index": choice.index, **delta}
            obj = "text_completion"
        part["logprobs"] = logprobs
        part["finish_reason"] = finish_reason
        return {"id": self.id, "object": obj, "created": self.created, "choices": [part]}

    def response(self) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        choices = []
        for choice in self.choices:
            shaped = self._logprobs(choice.logprobs, len(self.echoes[choice.index]))
            logprobs = shaped if self.logprobs else None
            if self.kind == "chat":
                calls = choice.tools.calls if choice.tools is not None else []
                message: dict[str, Any] = {
                    "role": "assistant",
                    # beside calls, whitespace (a grammar's trailing space) is no content
                    "content": choice.text if choice.text.strip() or not calls else None,
                }
                if choice.thought:
                    message["reasoning_content"] = choice.thought
                if calls:
                    message["tool_calls"] = calls
                choices.append(
                    {
                        "index": choice.index,
                        "message": message,
                        "logprobs": logprobs,
                        "finish_reason": choice.finish_reason,
                    }
                )
            else:
                choices.append(
                    {
                        "index": choice.index,
                        "text": choice.text,
                        "logprobs": logprobs,
                        "finish_reason": choice.finish_reason,
                    }
                )
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "choices": choices,
        }
