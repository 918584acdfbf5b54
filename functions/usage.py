"""Token accounting at the gateway: read each answer's usage, add it up, write in batches.

- ``prepare_request`` asks the runtime for a streamed answer's usage
  (``stream_options.include_usage``) when the client did not, and says so, so the
  gateway hides that extra chunk from a client that never asked for it.
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
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import repo
from modelserve.shared.metrics import UsageMetrics

METERED = ("chat/completions", "completions")
MAX_JSON_BYTES = 8 * 1024 * 1024


@dataclass
class Prepared:
    body: bytes
    hide_usage: bool  # the gateway asked for the usage chunk, the client did not


def prepare_request(path: str, body: bytes) -> Prepared:
    """The request body to send upstream, asking for a stream's usage when needed."""
    if not path.rstrip("/").endswith(METERED):
        return Prepared(body, False)
    try:
        request = json.loads(body)
    except ValueError:
        return Prepared(body, False)
    if not isinstance(request, dict) or request.get("stream") is not True:
        return Prepared(body, False)
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return Prepared(body, False)
    request["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return Prepared(json.dumps(request).encode(), True)


class UsageMeter:
    """Reads the usage out of an answer passing through; may drop the usage chunk."""

    def __init__(self, content_type: str, hide_usage: bool) -> None:
        self.streaming = content_type.startswith("text/event-stream")
        self._hide = hide_usage
        self._buffer = b""
        self._json = bytearray()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._pieces = 0
        self._reported = False

    def feed(self, chunk: bytes) -> bytes:
        """Note a chunk of the answer; returns what to pass on to the client."""
        if not self.streaming:
            if len(self._json) + len(chunk) <= MAX_JSON_BYTES:
                self._json += chunk
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
                if (isinstance(delta, dict) and delta.get("content")) or choice.get("text"):
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
        """(prompt, completion) tokens of the whole answer, or of what was sent of it."""
        if not self.streaming and self._json:
            try:
                answer = json.loads(bytes(self._json))
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                self._take(answer.get("usage"))
        if self._reported:
            return self.prompt_tokens, self.completion_tokens
        return 0, self._pieces


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
