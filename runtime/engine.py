"""The async face of the batched engine: jobs from requests, queueing, cancellation.

Requests are tokenized here, on the event loop (the vocabulary is read-only),
so a prompt that can never fit the context, a grammar llama.cpp refuses or a
schema that cannot become one is refused with a 400 before it queues, and a
full queue is refused with a 503 at once. Each choice of each prompt becomes a
job; the choices of one prompt form a group that shares its prefill. The
engine thread (``batched.py``) does all the llama.cpp work; ``responses.py``
turns its events into OpenAI's shapes, and the engine is told when a client
goes away, so its sequences are freed at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.trace import Span

from modelserve.runtime.batch import Tokens
from modelserve.runtime.batched import BatchedEngine, Channel, Event, Job, Usage
from modelserve.runtime.chat import (
    ChatTemplate,
    RenderedChat,
    TemplateCompileError,
    TemplateRenderError,
)
from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.embedder import Embedder, EmbeddingError
from modelserve.runtime.grammar import Grammar, GrammarError, json_object_grammar, schema_grammar
from modelserve.runtime.llama_model import LlamaModel, ModelLoadError
from modelserve.runtime.metrics import RuntimeMetrics
from modelserve.runtime.requests import ChatRequest, CompletionRequest, GenerationRequest
from modelserve.runtime.responses import Responder
from modelserve.runtime.scheduler import QueueFull, ShuttingDown
from modelserve.runtime.tools import ToolCallStream
from modelserve.shared import tracing

__all__ = ["BadParameter", "EngineError", "LlamaEngine", "Usage"]

log = logging.getLogger(__name__)
Disconnected = Callable[[], Awaitable[bool]]
DISCONNECT_POLL_SECONDS = 0.2


class EngineError(RuntimeError):
    """llama.cpp failed while handling a request."""


class BadParameter(ValueError):
    """A request parameter llama.cpp cannot honour (answered with 400 naming ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class _Prepared:
    leaders: list[Job]
    responder: Responder

    @property
    def total(self) -> int:
        return sum(1 + len(j.followers) for j in self.leaders)


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
        split_reasoning: bool = True,
    ) -> None:
        self.model = model
        self.core = core
        self.metrics = metrics
        self.template = template
        self.default_seed = default_seed
        self._embedder = embedder
        self._embeds_waiting = 0
        self.split_reasoning = split_reasoning

    @classmethod
    def load(cls, path: Path, config: RuntimeConfig, metrics: RuntimeMetrics) -> LlamaEngine:
        try:
            model = LlamaModel(
                path, n_gpu_layers=config.n_gpu_layers, type_k=config.type_k, type_v=config.type_v
            )
            try:
                template = ChatTemplate.for_model(model, config.chat_template_text())
            except TemplateCompileError as exc:
                model.close()
                raise EngineError(f"cannot serve {path}: {exc}") from exc
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
        return cls(
            model,
            core,
            metrics=metrics,
            template=template,
            default_seed=config.seed,
            embedder=embedder,
            split_reasoning=config.reasoning_format != "none",
        )

    @property
    def embeddings_enabled(self) -> bool:
        return self._embedder is not None

    @property
    def scheduler(self) -> Any:
        return self.core.scheduler

    def _prepare(self, kind: str, request: GenerationRequest) -> _Prepared:
        """Tokenize and check a request; BadParameter for what can never be served."""
        if request.n > self.core.slots:
            raise BadParameter(
                f"n: this server decodes at most {self.core.slots} choices together", "n"
            )
        bad = [t for t in (request.logit_bias or {}) if not 0 <= int(t) < self.model.n_vocab]
        if bad:
            raise BadParameter(
                f"logit_bias: token ids {bad} are outside 0..{self.model.n_vocab - 1}", "logit_bias"
            )
        stops = request.stops
        gbnf = request.grammar
        echoes: list[str] = []
        answered: str | None = None  # a chat's prompt: where reasoning may already be open
        top: int | None
        if isinstance(request, ChatRequest):
            tools = [t.model_dump(exclude_none=True) for t in request.tools or []]
            rendered = self._render(request, tools)
            answered = rendered.prompt
            prompts = [self._chat_prompt(rendered.prompt)]
            stops = stops + rendered.stops
            gbnf = gbnf or self._chat_grammar(request, [t["function"] for t in tools])
            top = (request.top_logprobs or 0) if request.logprobs else None
            max_tokens = request.completion_limit
        else:
            assert isinstance(request, CompletionRequest)
            texts = request.prompts()
            prompts = [self._completion_prompt(p) for p in texts]
            if request.echo:  # the prompt as sent; token ids as their text
                echoes = [p if isinstance(p, str) else self.model.detokenize(p) for p in texts]
            top = request.logprobs
            max_tokens = request.max_tokens
        if gbnf is not None:
            try:
                Grammar(self.model, gbnf).close()
            except GrammarError as exc:
                raise BadParameter(f"grammar: {exc}", "grammar") from exc
        channel = Channel(asyncio.get_running_loop())
        base_seed = request.seed if request.seed is not None else self.default_seed
        leaders: list[Job] = []
        for number, prompt in enumerate(prompts):
            self._check_length(prompt, "messages" if kind == "chat" else "prompt")
            group = [
                Job(
                    prompt=prompt,
                    sampling=request.sampling(None if base_seed is None else base_seed + choice),
                    stops=stops,
                    max_tokens=max_tokens,
                    channel=channel,
                    index=number * request.n + choice,
                    scope=request.cache_scope,
                    gbnf=gbnf,
                    logprobs=top,
                )
                for choice in range(request.n)
            ]
            group[0].followers = group[1:]
            leaders.append(group[0])
        choices = len(prompts) * request.n
        streams = None
        if isinstance(request, ChatRequest) and request.calls_tools:
            names = frozenset(t.function.name for t in request.tools or [])
            streams = [ToolCallStream(self.template.syntax, names) for _ in range(choices)]
        reasoning = self.template.reasoning
        thinking = None
        if answered is not None and reasoning is not None and self.split_reasoning:
            thinking = [reasoning.stream(answered) for _ in range(choices)]
        responder = Responder(
            kind,
            self.model.piece,
            choices=choices,
            per_prompt=request.n,
            logprobs=top is not None,
            tools=streams,
            echoes=[e for e in echoes for _ in range(request.n)] if echoes else None,
            reasoning=thinking,
        )
        return _Prepared(leaders, responder)

    def _render(self, request: ChatRequest, tools: list[dict[str, Any]]) -> RenderedChat:
        """The chat's prompt; a template that refuses these messages is the client's error."""
        try:
            return self.template.render(
                [m.for_template() for m in request.messages],
                tools if request.calls_tools else None,
            )
        except TemplateRenderError as exc:
            raise BadParameter(f"messages: {exc}", "messages") from exc

    def _chat_grammar(self, request: ChatRequest, functions: list[dict[str, Any]]) -> str | None:
        forced = request.forced_tool if request.calls_tools else None
        if forced is not None:
            chosen = [f for f in functions if forced is True or f["name"] == forced]
            try:
                return self.template.syntax.grammar(
                    chosen, request.parallel_tool_calls and forced is True
                )
            except GrammarError as exc:
                raise BadParameter(f"tools: {exc}", "tools") from exc
        response_format = request.response_format
        if response_format is None or response_format.type == "text":
            return None
        if response_format.type == "json_object":
            return json_object_grammar()
        assert response_format.json_schema is not None
        try:
            return schema_grammar(response_format.json_schema.schema_)
        except GrammarError as exc:
            raise BadParameter(f"response_format: {exc}", "response_format") from exc

    def _chat_prompt(self, text: str) -> Tokens:
        """A rendered chat's tokens with exactly one BOS where the model wants one.

        As llama.cpp's server: the model's ``add_bos`` decides, and a template that
        writes the BOS text itself (most do, as ``bos_token``) is not doubled."""
        bos = self.template.bos_token
        if self.model.add_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return self.model.tokenize(text, add_bos=True, special=True)

    def _completion_prompt(self, prompt: str | list[int]) -> Tokens:
        if isinstance(prompt, str):
            return self.model.tokenize(prompt, add_bos=True, special=True)
        if any(not 0 <= t < self.model.n_vocab for t in prompt):
            raise BadParameter(
                f"prompt: token ids must lie in 0..{self.model.n_vocab - 1}", "prompt"
            )
        return np.asarray(prompt, dtype=np.int32)

    def _check_length(self, prompt: Tokens, param: str) -> None:
        if len(prompt) == 0:
            raise BadParameter("the prompt is empty", param)
        n_ctx = self.core.n_ctx
        if len(prompt) >= n_ctx:
            raise BadParameter(
                f"the prompt is {len(prompt)} tokens; this server's context window holds "
                f"{n_ctx} tokens (prompt and completion together)",
                param,
            )

    async def _events(
        self, prepared: _Prepared, span: Span | None = None
    ) -> AsyncGenerator[Event, None]:
        """The engine's events for every choice; leaving early cancels them all.

        At the end each prompt's queue wait, prefill and decode become children of
        ``span`` (when it records), from the times the engine thread noted."""
        submitted: list[Job] = []
        try:
            for leader in prepared.leaders:
                self.core.submit(leader)
                submitted.append(leader)
            queue = prepared.leaders[0].channel.queue
            ended = 0
            while ended < prepared.total:
                event = await queue.get()
                if event.kind == "error":
                    raise EngineError(event.error or "generation failed")
                if event.kind == "refused":
                    raise ShuttingDown(event.error or "the server is shutting down")
                yield event
                if event.kind == "end":
                    ended += 1
        finally:
            for leader in submitted:
                self.core.cancel(leader)
            if span is not None and span.is_recording():
                for leader in prepared.leaders:
                    _record_phases(span, leader)

    async def stream(
        self,
        kind: str,
        request: GenerationRequest,
        usage_out: list[Usage] | None = None,
        span: Span | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as the engine produces them; closing the iterator stops generation."""
        prepared = self._prepare(kind, request)
        events = self._events(prepared, span)
        try:
            async for event in events:
                for chunk in prepared.responder.on_event(event):
                    yield chunk
        finally:
            await events.aclose()
        if usage_out is not None:
            usage_out.append(prepared.responder.usage)

    async def complete(
        self,
        kind: str,
        request: GenerationRequest,
        disconnected: Disconnected | None = None,
        span: Span | None = None,
    ) -> tuple[dict[str, Any], Usage]:
        """A whole (non-streamed) completion or chat completion."""
        prepared = self._prepare(kind, request)
        watcher = asyncio.create_task(self._watch(disconnected, prepared.leaders))
        events = self._events(prepared, span)
        try:
            async for event in events:
                prepared.responder.on_event(event)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await events.aclose()
        return prepared.responder.response(), prepared.responder.usage

    async def _watch(self, disconnected: Disconnected | None, leaders: list[Job]) -> None:
        """Cancel the request's jobs when its client goes away (their sequences are freed)."""
        if disconnected is None:
            return
        while True:
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)
            if await disconnected():
                log.info("client went away; stopping its generation")
                for leader in leaders:
                    self.core.cancel(leader)
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


def _record_phases(span: Span, job: Job) -> None:
    """The job's queue wait, prefill and decode as finished children of ``span``."""
    ended = job.last_token_at or time.monotonic()
    started = job.started_at or ended  # never left the queue: all of it was waiting
    prompt = {"index": job.index, "prompt_tokens": len(job.prompt)}
    tracing.record("queue", span, tracing.epoch_ns(job.arrived), tracing.epoch_ns(started))
    if job.started_at is None:
        return
    first = job.first_token_at or ended
    tracing.record(
        "prefill",
        span,
        tracing.epoch_ns(started),
        tracing.epoch_ns(first),
        cached_tokens=job.cached,
        **prompt,
    )
    if job.first_token_at is not None:
        tracing.record(
            "decode",
            span,
            tracing.epoch_ns(first),
            tracing.epoch_ns(ended),
            completion_tokens=len(job.generated),
            index=job.index,
        )


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
