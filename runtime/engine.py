"""The async face of the batched engine: OpenAI-shaped chunks, queueing, cancellation.

Requests are tokenized here, on the event loop (the vocabulary is read-only),
so a prompt that can never fit the context is refused with a 400 before it
queues, and a full queue is refused with a 503 at once. The engine thread
(``batched.py``) does all the llama.cpp work; this side turns its events into
llama-cpp-python's chunk shapes (which clients and ``assemble`` already know),
and tells the engine when a client goes away, so its sequence is freed at the
next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

from modelserve.runtime.batched import BatchedEngine, Channel, Event, Job, Usage
from modelserve.runtime.chat import ChatTemplate
from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.embedder import Embedder, EmbeddingError
from modelserve.runtime.llama_model import LlamaModel, ModelLoadError
from modelserve.runtime.metrics import RuntimeMetrics
from modelserve.runtime.sampling import SamplingParams
from modelserve.runtime.scheduler import QueueFull, ShuttingDown

__all__ = ["BadParameter", "EngineError", "LlamaEngine", "Usage", "assemble"]

log = logging.getLogger(__name__)
Disconnected = Callable[[], Awaitable[bool]]
DISCONNECT_POLL_SECONDS = 0.2


class EngineError(RuntimeError):
    """llama.cpp failed while handling a request."""


class BadParameter(ValueError):
    """A request parameter llama.cpp cannot honour (answered with 400)."""


def assemble(kind: str, chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """A whole OpenAI response out of streamed chunks; also its finish reason."""
    first = chunks[0] if chunks else {}
    texts: list[str] = []
    finish: str | None = None
    for chunk in chunks:
        for part in chunk.get("choices") or []:
            piece = part.get("delta", {}).get("content") if kind == "chat" else part.get("text")
            texts.append(piece or "")
            finish = part.get("finish_reason") or finish
    text = "".join(texts)
    choice: dict[str, Any]
    if kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    response = {
        "id": first.get("id"),
        "object": obj,
        "created": first.get("created", int(time.time())),
        "choices": [choice],
    }
    return response, finish


class _Chunks:
    """llama-cpp-python's streamed chunk shapes for one request."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4()}"
        self.created = int(time.time())

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "choices": [choice]}

    def role(self) -> dict[str, Any]:
        return self._chunk(
            {"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
        )

    def text(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        if self.kind == "chat":
            delta = {"content": text} if text else {}
            return self._chunk(
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            )
        return self._chunk(
            {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        )


class LlamaEngine:
    """One model, a batched generation engine, and optionally an embedder."""

    def __init__(
        self,
        model: LlamaModel,
        core: BatchedEngine,
        *,
        metrics: RuntimeMetrics,
        template: ChatTemplate,
        default_seed: int | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.model = model
        self.core = core
        self.metrics = metrics
        self.template = template
        self.default_seed = default_seed
        self._embedder = embedder
        self._embeds_waiting = 0

    @classmethod
    def load(cls, path: Path, config: RuntimeConfig, metrics: RuntimeMetrics) -> LlamaEngine:
        try:
            model = LlamaModel(path, n_gpu_layers=config.n_gpu_layers)
            core = BatchedEngine(
                model,
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                slots=config.slots(),
                cached_sequences=config.cached_sequences(),
                max_queue=config.max_queue,
                n_threads=config.n_threads,
                metrics=metrics,
            )
            embedder = (
                Embedder(model, n_batch=config.n_batch, n_threads=config.n_threads)
                if config.embeddings
                else None
            )
        except ModelLoadError as exc:
            raise EngineError(str(exc)) from exc
        template = ChatTemplate.for_model(model, config.chat_template_text())
        return cls(
            model,
            core,
            metrics=metrics,
            template=template,
            default_seed=config.seed,
            embedder=embedder,
        )

    @property
    def embeddings_enabled(self) -> bool:
        return self._embedder is not None

    @property
    def scheduler(self) -> Any:
        return self.core.scheduler

    def _job(self, kind: str, params: dict[str, Any]) -> Job:
        """Tokenize and check a request; BadParameter for what can never be served."""
        stops = params.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        if kind == "chat":
            rendered = self.template.render(params["messages"])
            prompt = self.model.tokenize(rendered.prompt, add_bos=False, special=True)
            stops += rendered.stops
        else:
            prompt = self.model.tokenize(params["prompt"], add_bos=True, special=True)
        if len(prompt) == 0:
            raise BadParameter("the prompt is empty")
        n_ctx = self.core.n_ctx
        if len(prompt) >= n_ctx:
            raise BadParameter(
                f"the prompt is {len(prompt)} tokens; this server's context window holds "
                f"{n_ctx} tokens (prompt and completion together)"
            )
        bias = {int(t): float(b) for t, b in (params.get("logit_bias") or {}).items()}
        bad = [t for t in bias if not 0 <= t < self.model.n_vocab]
        if bad:
            raise BadParameter(
                f"logit_bias: token ids {bad} are outside 0..{self.model.n_vocab - 1}"
            )
        seed = params.get("seed", self.default_seed)
        sampling = SamplingParams(
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            presence_penalty=float(params.get("presence_penalty", 0.0)),
            frequency_penalty=float(params.get("frequency_penalty", 0.0)),
            logit_bias=bias,
            seed=None if seed is None else int(seed),
        )
        max_tokens = params.get("max_tokens")
        return Job(
            prompt=prompt,
            sampling=sampling,
            stops=stops,
            max_tokens=int(max_tokens) if max_tokens else None,
            channel=Channel(asyncio.get_running_loop()),
        )

    async def _events(self, job: Job) -> AsyncGenerator[Event, None]:
        """The engine's events for ``job``; leaving early cancels it."""
        self.core.submit(job)
        try:
            while True:
                event = await job.channel.queue.get()
                if event.kind == "error":
                    raise EngineError(event.error or "generation failed")
                if event.kind == "refused":
                    raise ShuttingDown(event.error or "the server is shutting down")
                yield event
                if event.kind == "end":
                    return
        finally:
            self.core.cancel(job)

    async def _chunks(
        self, kind: str, job: Job, usage_out: list[Usage] | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        chunks = _Chunks(kind)
        events = self._events(job)
        try:
            async for event in events:
                if event.kind == "started":
                    if kind == "chat":
                        yield chunks.role()
                elif event.kind == "text":
                    yield chunks.text(event.text)
                elif event.kind == "end":
                    yield chunks.text("", event.finish_reason)
                    if usage_out is not None and event.usage is not None:
                        usage_out.append(event.usage)
        finally:
            await events.aclose()

    async def stream(
        self, kind: str, params: dict[str, Any], usage_out: list[Usage] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as the engine produces them; closing the iterator stops generation."""
        job = self._job(kind, params)
        chunks = self._chunks(kind, job, usage_out)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def complete(
        self, kind: str, params: dict[str, Any], disconnected: Disconnected | None = None
    ) -> tuple[dict[str, Any], Usage]:
        """A whole (non-streamed) completion or chat completion."""
        job = self._job(kind, params)
        usage: list[Usage] = []
        collected: list[dict[str, Any]] = []
        watcher = asyncio.create_task(self._watch(disconnected, job))
        chunks = self._chunks(kind, job, usage)
        try:
            async for chunk in chunks:
                collected.append(chunk)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await chunks.aclose()
        response, _ = assemble(kind, collected)
        return response, usage[0] if usage else Usage(len(job.prompt), 0)

    async def _watch(self, disconnected: Disconnected | None, job: Job) -> None:
        """Cancel ``job`` when its client goes away (its sequence is then freed)."""
        if disconnected is None:
            return
        while True:
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)
            if await disconnected():
                log.info("client went away; stopping its generation")
                self.core.cancel(job)
                return

    async def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """One mean-pooled vector per input, and the number of tokens read."""
        embedder = self._embedder
        if embedder is None:
            raise EngineError("embeddings are not enabled on this server")
        scheduler = self.core.scheduler
        if self._embeds_waiting >= max(scheduler.max_waiting, 1):
            raise QueueFull(scheduler.running, self._embeds_waiting, scheduler.max_waiting, 1)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[tuple[list[list[float]], int]] = loop.create_future()

        def work() -> None:
            try:
                outcome = embedder.embed(inputs)
            except EmbeddingError as exc:
                loop.call_soon_threadsafe(_settle, result, None, EngineError(str(exc)))
            else:
                loop.call_soon_threadsafe(_settle, result, outcome, None)

        self._embeds_waiting += 1
        try:
            self.core.run_between_steps(work)
            return await asyncio.shield(result)
        finally:
            self._embeds_waiting -= 1

    def refuse_queued(self, reason: str) -> None:
        self.core.refuse_queued(reason)

    def fail_running(self, reason: str) -> None:
        self.core.fail_running(reason)

    def close(self) -> None:
        self.core.close()
        if self._embedder is not None:
            self._embedder.close()
        self.model.close()


def _settle(
    future: asyncio.Future[tuple[list[list[float]], int]],
    value: tuple[list[list[float]], int] | None,
    error: BaseException | None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif value is not None:
        future.set_result(value)
