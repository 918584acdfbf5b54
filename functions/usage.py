"""Token accounting at the gateway: read each answer's usage, add it up, write in batches.

- Every request that can do work (any method but GET, HEAD, OPTIONS) is metered,
  whatever its path: completions, chat, embeddings, tokenize and detokenize
  alike (the last three count their tokens as prompt tokens).
- ``prepare_request`` judges the body the way the runtime will (a JSON object;
  ``stream``, ``stream_options``, ``n`` and the token limits of their exact JSON
  types, else 400), sends the runtime that same object, and asks it for a
  streamed answer's usage (``stream_options.include_usage``) when the client
  did not, and says so, so the gateway hides that extra chunk from a client
  that never asked for it.
- ``UsageMeter`` reads the answer as it passes: the ``usage`` object of a JSON
  answer or of a stream's last chunk. A stream cut before its usage chunk counts
  the pieces that were sent as completion tokens (each chunk carries one token's
  text); its prompt is then unknown and counted as 0.
- ``UsageRecorder`` sums per (minute, server, user, key) in memory and writes the
  sums every ``interval`` seconds, so no request waits for a database write; the
  same figures go to Prometheus counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import repo
from modelserve.shared.metrics import UsageMetrics

MAX_JSON_BYTES = 8 * 1024 * 1024
# A JSON answer longer than MAX_JSON_BYTES is read for its usage from this tail:
# the runtime writes ``usage`` as the answer's last key.
TAIL_BYTES = 64 * 1024
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BadMeteredRequest(ValueError):
    """A metered request the gateway cannot judge the way the runtime would (400)."""


@dataclass
class Prepared:
    """A metered request as the gateway judged it, and the body it sends upstream."""

    request: dict[str, Any]
    hide_usage: bool  # the gateway asked for the usage chunk, the client did not
    choices: int = 1  # answers it can generate: n x prompts
    completion_limit: int | None = None  # max_completion_tokens or max_tokens, as asked
    request_tokens: int = 0  # token ids it carries (detokenize): its prompt without usage
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        """What the runtime gets: the very object judged here, encoded once more."""
        return json.dumps(self.request).encode()

    def cap(self, left: int) -> None:
        """Hold the answer within ``left`` tokens, so one request cannot overspend.

        A request that names no limit gets ``max_tokens`` = ``left`` / choices;
        one whose asked worst case (choices x limit) exceeds ``left`` is refused
        with :class:`WorstCaseOverBudget`.
        """
        worst = self.worst_case
        if worst is not None and worst > left:
            raise WorstCaseOverBudget(worst, left)
        if self.completion_limit is None and self.generates:
            per_choice = left // self.choices
            if per_choice < 1:
                raise WorstCaseOverBudget(self.choices, left)
            self.request["max_tokens"] = per_choice
            self.completion_limit = per_choice

    @property
    def generates(self) -> bool:
        return "messages" in self.request or "prompt" in self.request

    @property
    def worst_case(self) -> int | None:
        """The most completion tokens the answer can hold (None: no limit was asked)."""
        if not self.generates:
            return 0
        if self.completion_limit is None:
            return None
        return self.choices * self.completion_limit


class WorstCaseOverBudget(Exception):
    def __init__(self, worst: int, left: int) -> None:
        super().__init__(
            f"this request may generate up to {worst} tokens and its budget has {left} "
            "left today (UTC): lower max_tokens or n"
        )
        self.worst, self.left = worst, left


def _strict(request: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A field the gateway decides on must have exactly its JSON type when present.

    The runtime's validation is lax (``"stream": 1`` is true there): a value the
    gateway read one way and the runtime another could skip the meter.
    """
    value = request.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadMeteredRequest(f"{name}: must be a JSON {names.replace('dict', 'object')}")
    return value


def prepare_request(body: bytes) -> Prepared:
    """Judge a metered request's body; ask for a stream's usage when the client did not.

    Every metered request is a JSON object (the runtime takes no other), and
    the fields that decide its metering (``stream``, ``stream_options``, ``n``,
    ``max_tokens``, ``max_completion_tokens``) must be of their exact JSON
    types, or :class:`BadMeteredRequest`.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadMeteredRequest("the request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadMeteredRequest("the request body must be a JSON object")
    stream = _strict(request, "stream", bool)
    options = _strict(request, "stream_options", dict)
    if options is not None:
        _strict(options, "include_usage", bool)
    n = _strict(request, "n", int)
    limits = [_strict(request, k, int) for k in ("max_completion_tokens", "max_tokens")]
    prompt = request.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not _ints(prompt) else 1
    tokens = request.get("tokens")
    prepared = Prepared(
        request,
        False,
        choices=max(n or 1, 1) * prompts,
        completion_limit=next((v for v in limits if v), None),
        request_tokens=len(tokens) if isinstance(tokens, list) else 0,
    )
    if "prompt" in request and "messages" not in request and "max_tokens" not in request:
        prepared.completion_limit = COMPLETION_DEFAULT_MAX_TOKENS  # the runtime's default
    if stream is True and not (options or {}).get("include_usage"):
        request["stream_options"] = {**(options or {}), "include_usage": True}
        prepared.hide_usage = True
    return prepared


# OpenAI's (and the runtime's) max_tokens for a legacy completion that names none.
COMPLETION_DEFAULT_MAX_TOKENS = 16


def _ints(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


class UsageMeter:
    """Reads the usage out of an answer passing through; may drop the usage chunk."""

    def __init__(self, content_type: str, hide_usage: bool, request_tokens: int = 0) -> None:
        self.streaming = content_type.startswith("text/event-stream")
        self._hide = hide_usage
        self._request_tokens = request_tokens
        self._buffer = b""
        self._json = bytearray()
        self._tail = b""
        self._bytes = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._pieces = 0
        self._reported = False

    def feed(self, chunk: bytes) -> bytes:
        """Note a chunk of the answer; returns what to pass on to the client."""
        if not self.streaming:
            self._bytes += len(chunk)
            if self._bytes <= MAX_JSON_BYTES:
                self._json += chunk
            else:
                self._json = bytearray()  # too long to parse whole: the tail says
            self._tail = (self._tail + chunk)[-TAIL_BYTES:]
            return chunk
        self._buffer += chunk
        out: list[bytes] = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            if not self._event(event):
                out.append(event + b"\n\n")
        return b"".join(out)

    def rest(self) -> bytes:
        """What is left in the buffer at the end (an unterminated event)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _event(self, event: bytes) -> bool:
        """Account one SSE event; True when it is the usage chunk to hide."""
        data = b"\n".join(
            line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data or data == b"[DONE]":
            return False
        try:
            chunk = json.loads(data)
        except ValueError:
            return False
        if not isinstance(chunk, dict):
            return False
        if self._take(chunk.get("usage")):
            return self._hide and not chunk.get("choices")
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                delta = choice.get("delta") or {}
                if choice.get("text") or (
                    isinstance(delta, dict)
                    and any(delta.get(k) for k in ("content", "tool_calls", "function_call"))
                ):
                    self._pieces += 1
        return False

    def _take(self, usage: Any) -> bool:
        if not isinstance(usage, dict):
            return False
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        self._reported = True
        return True

    def finish(self) -> tuple[int, int]:
        """(prompt, completion) tokens of the whole answer, or of what was sent of it.

        A JSON answer's ``usage`` (read from its tail when it is too long to parse
        whole); without one, token lists count as prompt (``/tokenize``'s answer,
        ``/detokenize``'s request). A JSON answer too long to parse whose usage
        cannot be found is charged one token per byte: never nothing.
        """
        if not self.streaming and self._bytes:
            answer = self._answer()
            if isinstance(answer, dict) and not self._take(answer.get("usage")):
                listed = answer.get("tokens")
                if isinstance(listed, list):
                    return len(listed), 0
            if answer is None and not self._reported:
                return 0, self._bytes
        if self._reported:
            return self.prompt_tokens, self.completion_tokens
        if self._request_tokens:
            return self._request_tokens, self._pieces
        return 0, self._pieces

    def _answer(self) -> Any:
        """The JSON answer, or only ``{"usage": ...}`` read from the tail of a long one.

        The runtime writes ``usage`` last, so in a long answer it is the last
        ``"usage":`` key whose object closes the whole answer; text inside the
        answer cannot fake that, since its quotes are escaped.
        """
        if self._bytes <= MAX_JSON_BYTES:
            try:
                return json.loads(bytes(self._json))
            except ValueError:
                return {}
        tail = self._tail.rstrip()
        for found in reversed(list(_USAGE_KEY.finditer(tail))):
            text = tail[found.end() :].decode("utf-8", "replace")
            try:
                usage, end = json.JSONDecoder().raw_decode(text)
            except ValueError:
                continue
            if isinstance(usage, dict) and text[end:].strip() == "}":
                return {"usage": usage}
        return None


class UsageRecorder:
    """Per-minute sums in memory, written every ``interval`` s (and on ``close``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 2.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._pending: dict[repo.UsageKey, repo.UsageCounts] = {}
        self._task: asyncio.Task[None] | None = None
        # Held while a batch is being written: a budget reading the database and
        # what is still in memory sees each token exactly once.
        self.writing = asyncio.Lock()
        self.registry = registry or CollectorRegistry()
        self.metrics = UsageMetrics(self.registry)

    def record(
        self, server: uuid.UUID, user: str, key_id: str | None, prompt: int, completion: int
    ) -> None:
        now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        key = repo.UsageKey(now, server, user, key_id or "")
        counts = self._pending.setdefault(key, repo.UsageCounts())
        counts.requests += 1
        counts.prompt_tokens += prompt
        counts.completion_tokens += completion
        labels = (str(server), user, key_id or "")
        self.metrics.prompt.labels(*labels).inc(prompt)
        self.metrics.completion.labels(*labels).inc(completion)
        self.metrics.requests.labels(*labels).inc()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unflushed(
        self, since: dt.datetime, *, key_id: str | None = None, user: str | None = None
    ) -> int:
        """Tokens recorded here since ``since`` and not yet written, for a key or a user."""
        return sum(
            c.prompt_tokens + c.completion_tokens
            for k, c in self._pending.items()
            if k.minute >= since
            and (key_id is None or k.key_id == key_id)
            and (user is None or k.username == user)
        )

    async def flush(self) -> None:
        async with self.writing:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            async with self._sessions.begin() as session:
                await repo.add_usage(session, batch)
        except Exception:
            for key, counts in batch.items():  # keep them for the next try
                into = self._pending.setdefault(key, repo.UsageCounts())
                into.requests += counts.requests
                into.prompt_tokens += counts.prompt_tokens
                into.completion_tokens += counts.completion_tokens
            raise

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(Exception):  # the next round tries again
                await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
