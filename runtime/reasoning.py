"""Reasoning split from the answer: ``reasoning_content`` beside ``content``.

Reasoning models write their thinking before the answer, in one of two ways
their chat template shows:

- ``<think>...</think>`` (DeepSeek-R1, Qwen3, QwQ, and their distillations);
  a template may open the block itself at the end of the prompt (the model then
  starts inside it), which :meth:`ReasoningSyntax.stream` is told;
- gpt-oss's harmony channels: ``<|channel|>analysis<|message|>...<|end|>``
  then ``<|start|>assistant<|channel|>final<|message|>...``.

llama-server's ``--reasoning-format`` (default ``auto``) returns the thinking
as ``reasoning_content`` and only the answer as ``content``; ``none`` leaves
the text as the model wrote it. The runtime does the same, chosen by the
``reasoning_format`` parameter. The split works on a stream: text that cannot
be the start of a marker goes out at once.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CHANNEL, MESSAGE, END, START = "<|channel|>", "<|message|>", "<|end|>", "<|start|>"
ANALYSIS = "analysis"


@dataclass(frozen=True)
class ReasoningSyntax:
    """How one family marks its thinking."""

    name: str
    markers: tuple[str, ...]

    def stream(self, prompt: str) -> ReasoningStream:
        """A splitter for one answer to ``prompt``."""
        if self.name == "harmony":
            return HarmonyStream()
        return ThinkStream(opened=prompt.rstrip().endswith(THINK_OPEN))


THINK = ReasoningSyntax("think", (THINK_OPEN, THINK_CLOSE))
HARMONY = ReasoningSyntax("harmony", (CHANNEL, MESSAGE, END, START, "<|constrain|>"))


def reasoning_syntax(template: str) -> ReasoningSyntax | None:
    """The reasoning format a chat template teaches (None: the model does not reason)."""
    if CHANNEL in template and MESSAGE in template:
        return HARMONY
    if THINK_CLOSE in template:
        return THINK
    return None


class ReasoningStream:
    """Splits one answer's streamed text into (reasoning, content)."""

    def push(self, text: str) -> tuple[str, str]:
        raise NotImplementedError

    def finish(self) -> tuple[str, str]:
        raise NotImplementedError


def _partial_tail(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that begins one of ``markers``."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:size]):
                longest = size
                break
    return longest


@dataclass
class ThinkStream(ReasoningStream):
    """``<think>`` blocks: a block at the very start of the answer is the reasoning.

    Whitespace that starts the thinking or the answer after it is dropped, as
    llama-server drops it."""

    opened: bool = False  # the prompt ended inside the block
    _state: str = "start"  # start -> thinking -> answer
    _buffer: str = ""
    _trim: bool = True  # drop the whitespace that starts the current part

    def __post_init__(self) -> None:
        if self.opened:
            self._state = "thinking"

    def push(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning = content = ""
        if self._state == "start":
            stripped = self._buffer.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._buffer, self._state = stripped[len(THINK_OPEN) :], "thinking"
            elif not stripped or THINK_OPEN.startswith(stripped):
                return "", ""  # too early to tell
            else:
                self._state, self._trim = "answer", False
        if self._state == "thinking":
            self._lstrip()
            at = self._buffer.find(THINK_CLOSE)
            if at < 0:
                keep = _partial_tail(self._buffer, (THINK_CLOSE,))
                reasoning = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return reasoning, ""
            reasoning = self._buffer[:at]
            self._buffer = self._buffer[at + len(THINK_CLOSE) :]
            self._state, self._trim = "answer", True
        if self._state == "answer":
            self._lstrip()
            content, self._buffer = self._buffer, ""
        return reasoning, content

    def _lstrip(self) -> None:
        if self._trim:
            self._buffer = self._buffer.lstrip()
            self._trim = not self._buffer

    def finish(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self._state == "thinking":
            return rest, ""  # never closed: all of it was thinking
        return "", rest


@dataclass
class HarmonyStream(ReasoningStream):
    """Harmony: the ``analysis`` channel is reasoning, ``final`` (and any other) content."""

    _channel: str | None = None  # None: reading a header, up to <|message|>
    _buffer: str = ""

    def push(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning = content = ""
        while self._buffer:
            if self._channel is None:
                at = self._buffer.find(MESSAGE)
                if at < 0:
                    if not self._could_be_header(self._buffer):
                        self._channel = "final"  # plain text: an answer
                        continue
                    return reasoning, content
                header = self._buffer[:at]
                self._buffer = self._buffer[at + len(MESSAGE) :]
                channel = header.split(CHANNEL, 1)[1] if CHANNEL in header else "final"
                self._channel = channel.split()[0] if channel.split() else "final"
                continue
            ends = [i for i in (self._buffer.find(END), self._buffer.find(START)) if i >= 0]
            at = min(ends, default=-1)
            if at < 0:
                keep = _partial_tail(self._buffer, (END, START))
                body = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
            else:
                body = self._buffer[:at]
                marker = END if self._buffer.startswith(END, at) else START
                self._buffer = self._buffer[at + len(marker) :]
            if self._channel == ANALYSIS:
                reasoning += body
            else:
                content += body
            if at < 0:
                return reasoning, content
            self._channel = None
        return reasoning, content

    @staticmethod
    def _could_be_header(text: str) -> bool:
        """Whether ``text`` can still become ``<|start|>assistant<|channel|>name...``."""
        stripped = text.lstrip()
        for marker in (START, CHANNEL):
            if stripped.startswith(marker) or marker.startswith(stripped):
                return True
        return False

    def finish(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self._channel == ANALYSIS:
            return rest, ""
        if self._channel is None and self._could_be_header(rest):
            return "", ""  # a header with no message
        return "", rest
