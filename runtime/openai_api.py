"""OpenAI-compatible routes: completions, chat, embeddings, models; llama-server's tokenizer.

kserve 0.21's own OpenAI layer imports its request and response types from vLLM,
which would put vLLM and torch into a llama.cpp image; these routes serve the
same paths (``/openai/v1/...``, KServe's prefix, and ``/v1/...`` for OpenAI
clients) on KServe's FastAPI app without it. Errors use OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.trace import Span
from pydantic import BaseModel, ValidationError

from modelserve.runtime.engine import BadParameter, EngineError, LlamaEngine, Usage
from modelserve.runtime.requests import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    GenerationRequest,
    TokenizeRequest,
)
from modelserve.runtime.scheduler import QueueFull, ShuttingDown
from modelserve.shared import tracing
from modelserve.shared.cache_scope import CACHE_SCOPE_HEADER

PREFIXES = ("/openai/v1", "/v1")


def _base64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_error(exc: ValidationError) -> JSONResponse:
    """A 400 whose ``param`` is the first bad field, as OpenAI names it (top level)."""
    problems, params = [], []
    for problem in exc.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        loc = [str(p) for p in problem["loc"]]
        if not loc and ": " in message:  # a check across fields names its field first
            name, message = message.split(": ", 1)
            loc = [name]
        params.append(loc[0] if loc else None)
        problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return error(400, "; ".join(problems), param=params[0])


def _busy(exc: QueueFull) -> JSONResponse:
    return error(
        503,
        f"{exc}; retry after {exc.retry_after}s",
        kind="server_busy",
        code="shutting_down" if isinstance(exc, ShuttingDown) else "queue_full",
        headers={"Retry-After": str(exc.retry_after)},
    )


class OpenAIRoutes:
    """The handlers, bound to one engine and one served model name."""

    def __init__(self, engine: LlamaEngine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.created = int(time.time())

    def router(self) -> APIRouter:
        router = APIRouter()
        for prefix in PREFIXES:
            router.add_api_route(f"{prefix}/completions", self.completions, methods=["POST"])
            router.add_api_route(f"{prefix}/chat/completions", self.chat, methods=["POST"])
            router.add_api_route(f"{prefix}/embeddings", self.embeddings, methods=["POST"])
            router.add_api_route(f"{prefix}/models", self.list_models, methods=["GET"])
            router.add_api_route(f"{prefix}/models/{{model_id}}", self.get_model, methods=["GET"])
        # llama-server serves these at the root; the prefixes reach them through a gateway
        for prefix in ("", *PREFIXES):
            router.add_api_route(f"{prefix}/tokenize", self.tokenize, methods=["POST"])
            router.add_api_route(f"{prefix}/detokenize", self.detokenize, methods=["POST"])
        return router

    def _card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "modelserve",
            # KServe's v1 model-readiness fields, for clients of that protocol.
            "name": self.model_name,
            "ready": True,
        }

    async def list_models(self) -> JSONResponse:
        # "models" keeps KServe's v1 list shape working beside OpenAI's.
        return JSONResponse({"object": "list", "data": [self._card()], "models": [self.model_name]})

    async def get_model(self, model_id: str) -> JSONResponse:
        if model_id != self.model_name:
            return self._unknown_model(model_id)
        return JSONResponse(self._card())

    def _unknown_model(self, name: str) -> JSONResponse:
        return error(
            404,
            f"The model `{name}` does not exist; this server serves `{self.model_name}`.",
            code="model_not_found",
            param="model",
        )

    async def _parse(self, raw: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
        try:
            body = await raw.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "the request body is not valid JSON")
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            return _validation_error(exc)
        if getattr(parsed, "model", self.model_name) != self.model_name:
            return self._unknown_model(parsed.model)  # type: ignore[attr-defined]
        return parsed

    async def completions(self, raw: Request) -> Response:
        parsed = await self._parse(raw, CompletionRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, CompletionRequest)
        return await self._generate("completion", parsed, raw)

    async def chat(self, raw: Request) -> Response:
        parsed = await self._parse(raw, ChatRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, ChatRequest)
        return await self._generate("chat", parsed, raw)

    async def _generate(self, kind: str, request: GenerationRequest, raw: Request) -> Response:
        endpoint = "chat" if kind == "chat" else "completions"
        request.scoped(raw.headers.get(CACHE_SCOPE_HEADER, ""))
        # The caller's trace (the gateway's span); a streamed answer ends it when it ends.
        span = tracing.start(f"runtime {endpoint}", raw.headers.get("traceparent"))
        streamed = False
        try:
            if request.stream:
                response = await self._stream(kind, request, raw, endpoint, span)
                streamed = isinstance(response, StreamingResponse)
                return response
            result, usage = await self.engine.complete(kind, request, raw.is_disconnected, span)
        except QueueFull as exc:
            self.engine.metrics.requests.labels(endpoint, "busy").inc()
            return _busy(exc)
        except BadParameter as exc:  # e.g. a prompt longer than the context window
            self.engine.metrics.requests.labels(endpoint, "invalid").inc()
            return error(400, str(exc), param=exc.param)
        except EngineError as exc:
            self.engine.metrics.requests.labels(endpoint, "error").inc()
            return error(500, str(exc), kind="server_error")
        finally:
            if not streamed:
                span.end()
        self.engine.metrics.requests.labels(endpoint, "ok").inc()
        result["model"] = self.model_name
        result["usage"] = usage.as_dict()
        return JSONResponse(result)

    async def _stream(
        self, kind: str, request: GenerationRequest, raw: Request, endpoint: str, span: Span
    ) -> Response:
        include_usage = request.include_usage
        usage: list[Usage] = []
        chunks = self.engine.stream(kind, request, usage, span)
        # Wait for the first chunk before answering, so that a full queue or a
        # bad request still gets its own status code instead of a broken stream;
        # a client that leaves while queued gives its place up.
        first_task = asyncio.ensure_future(anext(chunks))
        while not first_task.done():
            await asyncio.wait({first_task}, timeout=0.2)
            if not first_task.done() and await raw.is_disconnected():
                first_task.cancel()
                await asyncio.gather(first_task, return_exceptions=True)
                await chunks.aclose()
                return Response(status_code=499)
        try:
            first = first_task.result()
        except StopAsyncIteration:
            first = None

        async def events() -> AsyncIterator[str]:
            last: dict[str, Any] | None = None
            try:
                pending = [first] if first is not None else []
                for chunk in pending:
                    last = chunk
                    yield self._sse(chunk)
                try:
                    async for chunk in chunks:
                        last = chunk
                        yield self._sse(chunk)
                except EngineError as exc:  # ended mid-stream: say why, never just stop
                    self.engine.metrics.requests.labels(endpoint, "error").inc()
                    body = {"error": {"message": str(exc), "type": "server_error", "code": 503}}
                    yield f"data: {json.dumps(body)}\n\n"
                    return
                if include_usage and usage and last is not None:
                    yield self._sse(
                        {
                            "id": last.get("id"),
                            "object": last.get("object"),
                            "created": last.get("created"),
                            "choices": [],
                            "usage": usage[0].as_dict(),
                        }
                    )
                yield "data: [DONE]\n\n"
                self.engine.metrics.requests.labels(endpoint, "ok").inc()
            finally:
                await chunks.aclose()
                span.end()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _sse(self, chunk: dict[str, Any]) -> str:
        chunk["model"] = self.model_name
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def embeddings(self, raw: Request) -> Response:
        if not self.engine.embeddings_enabled:
            return error(
                404,
                "embeddings are not enabled on this server (start it with --embeddings)",
                code="embeddings_disabled",
            )
        parsed = await self._parse(raw, EmbeddingRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, EmbeddingRequest)
        inputs = [parsed.input] if isinstance(parsed.input, str) else parsed.input
        if not inputs or any(not i for i in inputs):
            return error(400, "input: every input must be a non-empty string", param="input")
        try:
            vectors, tokens = await self.engine.embed(inputs)
        except QueueFull as exc:
            return _busy(exc)
        except EngineError as exc:
            return error(500, str(exc), kind="server_error")
        self.engine.metrics.requests.labels("embeddings", "ok").inc()
        return JSONResponse(
            {
                "object": "list",
                "model": self.model_name,
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": _base64_floats(v) if parsed.encoding_format == "base64" else v,
                    }
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def tokenize(self, raw: Request) -> Response:
        """llama-server's ``/tokenize``: ``{"tokens": [...]}``, with pieces when asked."""
        parsed = await self._parse(raw, TokenizeRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, TokenizeRequest)
        model = self.engine.model
        tokens = [
            int(t) for t in model.tokenize(parsed.content, add_bos=parsed.add_special, special=True)
        ]
        if not parsed.with_pieces:
            return JSONResponse({"tokens": tokens})
        pieces = []
        for token in tokens:
            data = model.piece(token) or model.token_text(token).encode()
            try:
                piece: str | list[int] = data.decode()
            except UnicodeDecodeError:
                piece = list(data)  # llama-server gives bytes that are not whole UTF-8
            pieces.append({"id": token, "piece": piece})
        return JSONResponse({"tokens": pieces})

    async def detokenize(self, raw: Request) -> Response:
        """llama-server's ``/detokenize``: ``{"content": "..."}``."""
        parsed = await self._parse(raw, DetokenizeRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, DetokenizeRequest)
        model = self.engine.model
        if any(not 0 <= t < model.n_vocab for t in parsed.tokens):
            return error(
                400, f"tokens: token ids must lie in 0..{model.n_vocab - 1}", param="tokens"
            )
        return JSONResponse({"content": model.detokenize(parsed.tokens)})
