"""llama-cpp-python behind an async interface: queued, cancellable, measured.

Generation runs on one worker thread (llama.cpp is blocking and single-context),
always in llama-cpp-python's streaming mode: the thread stops a generation by
leaving the chunk loop, which closes llama's generator between two tokens.
(Raising from a logits processor cannot do it: that runs inside a ctypes
callback, where exceptions are printed and swallowed.) Non-streamed answers are
assembled from the same chunks.

A per-token hook, passed as the logits processor, reads the exact prompt length
from the first call's input ids, counts sampled tokens, times first-token and
inter-token latency, and applies OpenAI's ``logit_bias`` (llama-cpp-python's
own ``logit_bias`` drops every other processor: it assigns ``list.extend()``'s
``None``). Whatever ends a request, the model is released only after the worker
thread has stopped touching it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelserve.runtime.config import RuntimeConfig
from modelserve.runtime.metrics import RuntimeMetrics
from modelserve.runtime.scheduler import Scheduler

log = logging.getLogger(__name__)
Disconnected = Callable[[], Awaitable[bool]]
DISCONNECT_POLL_SECONDS = 0.2


class EngineError(RuntimeError):
    """llama.cpp failed while handling a request."""


class BadParameter(ValueError):
    """A request parameter llama.cpp cannot honour (answered with 400)."""


@dataclass
class TokenHook:
    """Called by llama-cpp-python's sampler before each token is drawn.

    ``input_ids`` holds the prompt plus every token generated so far, so its
    length tells prompt size and position exactly, even if the sampler is
    called more than once for one position.
    """

    arrived: float
    metrics: RuntimeMetrics
    bias: dict[int, float] | None = None
    prompt_tokens: int | None = None
    sampled: int = 0
    _last_position: int = -1
    _last_time: float | None = field(default=None, repr=False)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        position = len(input_ids)
        if position > self._last_position:
            now = time.monotonic()
            if self.prompt_tokens is None:
                self.prompt_tokens = position
                self.metrics.prompt_tokens.inc(position)
                self.metrics.time_to_first_token.observe(now - self.arrived)
            elif self._last_time is not None:
                self.metrics.inter_token_latency.observe(now - self._last_time)
            self._last_position, self._last_time = position, now
            self.sampled += 1
            self.metrics.generated_tokens.inc()
        if self.bias:
            for token, bias in self.bias.items():
                scores[token] += bias
        return scores

    def usage(self, finish_reason: str | None) -> Usage:
        # A generation that ends on end-of-sequence sampled that token without
        # emitting it. (One that ends on a stop string is counted in full.)
        generated = self.sampled - 1 if finish_reason == "stop" and self.sampled else self.sampled
        return Usage(self.prompt_tokens or 0, max(generated, 0))


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


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


async def join_thread(job: asyncio.Future[Any]) -> None:
    """Wait until the worker thread is done, even through repeated cancellation.

    Releasing the model while the thread still runs would let the next request
    use llama.cpp concurrently; a cancellation is re-raised once the thread is out.
    """
    cancelled = False
    while not job.done():
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # the caller reads the job's outcome itself
            break
    if cancelled:
        raise asyncio.CancelledError


class LlamaEngine:
    """Owns the Llama instance(s) and runs every request through the scheduler."""

    def __init__(
        self,
        llm: Any,
        *,
        scheduler: Scheduler,
        metrics: RuntimeMetrics,
        embedder: Any | None = None,
    ) -> None:
        self._llm = llm
        self._embedder = embedder
        self.scheduler = scheduler
        self.metrics = metrics
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llama")

    @classmethod
    def load(cls, path: Path, config: RuntimeConfig, metrics: RuntimeMetrics) -> LlamaEngine:
        from llama_cpp import Llama, llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        common: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": config.n_ctx,
            "n_batch": config.n_batch,
            "n_threads": config.n_threads,
            "n_gpu_layers": config.n_gpu_layers,
            "verbose": False,
        }
        if config.seed is not None:
            common["seed"] = config.seed
        try:
            llm = Llama(**common)
            embedder = (
                Llama(**common, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
                if config.embeddings
                else None
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {path}: {exc}") from exc
        template = config.chat_template_text()
        if template is not None:
            # The override gets the model's own begin/end-of-sequence tokens.
            def token_text(token: int) -> str:
                return bytes(llm.detokenize([token], special=True)).decode(errors="replace")

            llm.chat_handler = Jinja2ChatFormatter(
                template=template,
                eos_token=token_text(llm.token_eos()),
                bos_token=token_text(llm.token_bos()),
            ).to_chat_handler()
        scheduler = Scheduler(config.max_queue, on_change=metrics.observe_queue)
        return cls(llm, scheduler=scheduler, metrics=metrics, embedder=embedder)

    @property
    def embeddings_enabled(self) -> bool:
        return self._embedder is not None

    def _prepare(self, kind: str, params: dict[str, Any]) -> tuple[Callable[..., Any], TokenHook]:
        params = dict(params)
        bias = params.pop("logit_bias", None)
        if bias:
            vocab = self._llm.n_vocab()
            bad = [t for t in bias if not 0 <= int(t) < vocab]
            if bad:
                raise BadParameter(f"logit_bias: token ids {bad} are outside 0..{vocab - 1}")
        hook = TokenHook(time.monotonic(), self.metrics, bias or None)
        call = self._llm.create_chat_completion if kind == "chat" else self._llm.create_completion
        return (lambda: call(**params, stream=True, logits_processor=[hook])), hook

    @staticmethod
    def _drive(
        start: Callable[[], Any], cancel: threading.Event, emit: Callable[[dict[str, Any]], None]
    ) -> None:
        """Worker thread: pull chunks until done or cancelled; closing stops llama.cpp."""
        chunks = start()
        try:
            for chunk in chunks:
                emit(chunk)
                if cancel.is_set():
                    break
        finally:
            chunks.close()

    async def _watch(self, disconnected: Disconnected | None, cancel: threading.Event) -> None:
        if disconnected is None:
            return
        while not cancel.is_set():
            if await disconnected():
                log.info("client went away; stopping its generation")
                cancel.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    async def complete(
        self, kind: str, params: dict[str, Any], disconnected: Disconnected | None = None
    ) -> tuple[dict[str, Any], Usage]:
        """A whole (non-streamed) completion or chat completion."""
        start, hook = self._prepare(kind, params)
        cancel = threading.Event()
        collected: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        async with self.scheduler.slot():
            watcher = asyncio.create_task(self._watch(disconnected, cancel))
            job = loop.run_in_executor(self._worker, self._drive, start, cancel, collected.append)
            try:
                await asyncio.shield(job)
            except ValueError as exc:  # e.g. the prompt does not fit the context
                raise BadParameter(str(exc)) from exc
            except Exception as exc:
                raise EngineError(f"generation failed: {exc}") from exc
            finally:
                cancel.set()
                watcher.cancel()
                await join_thread(job)
        response, finish = assemble(kind, collected)
        return response, hook.usage(finish)

    async def stream(
        self, kind: str, params: dict[str, Any], usage_out: list[Usage] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as llama.cpp produces them; closing the iterator stops generation."""
        start, hook = self._prepare(kind, params)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        finish: str | None = None

        def emit(chunk: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        async with self.scheduler.slot():
            job = loop.run_in_executor(self._worker, self._drive, start, cancel, emit)
            job.add_done_callback(lambda _: queue.put_nowait(None))
            try:
                while (chunk := await queue.get()) is not None:
                    choice = (chunk.get("choices") or [{}])[0]
                    finish = choice.get("finish_reason") or finish
                    yield chunk
                try:
                    job.result()
                except ValueError as exc:
                    raise BadParameter(str(exc)) from exc
                except Exception as exc:
                    raise EngineError(f"generation failed: {exc}") from exc
                if usage_out is not None:
                    usage_out.append(hook.usage(finish))
            finally:
                cancel.set()
                await join_thread(job)  # the model is ours until the thread lets go

    async def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """One mean-pooled vector per input, and the number of tokens read."""
        if self._embedder is None:
            raise EngineError("embeddings are not enabled on this server")
        embedder = self._embedder
        loop = asyncio.get_running_loop()

        def work() -> tuple[list[list[float]], int]:
            result = embedder.create_embedding(inputs)
            vectors = [item["embedding"] for item in result["data"]]
            return vectors, int(result["usage"]["prompt_tokens"])

        async with self.scheduler.slot():
            job = loop.run_in_executor(self._worker, work)
            try:
                return await asyncio.shield(job)
            finally:
                await join_thread(job)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
