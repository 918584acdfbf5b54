"""OpenAI-compatible routes: completions, chat, embeddings, models.

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
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelserve.runtime.engine import BadParameter, EngineError, LlamaEngine, Usage
from modelserve.runtime.scheduler import QueueFull, ShuttingDown

PREFIXES = ("/openai/v1", "/v1")


class _Request(BaseModel):
    # OpenAI clients send fields we do not act on (user, logprobs=False, ...).
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def sampling(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop or [],
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        if self.seed is not None:
            params["seed"] = self.seed
        if self.logit_bias:
            params["logit_bias"] = self.logit_bias
        return params

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)

    def llama_params(self) -> dict[str, Any]:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("prompt: exactly one prompt per request is supported")
            prompt = prompt[0]
        return {"prompt": prompt, "max_tokens": self.max_tokens, **self.sampling()}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def llama_params(self) -> dict[str, Any]:
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
        return {
            "messages": messages,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            **self.sampling(),
        }


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str]
    # The openai client asks for base64 by default: little-endian float32 bytes.
    encoding_format: Literal["float", "base64"] = "float"


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
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error(400, problems, param=param)


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

    async def _generate(self, kind: str, request: Any, raw: Request) -> Response:
        endpoint = "chat" if kind == "chat" else "completions"
        try:
            params = request.llama_params()
        except ValueError as exc:
            return error(400, str(exc))
        try:
            if request.stream:
                return await self._stream(kind, params, request.include_usage, raw, endpoint)
            result, usage = await self.engine.complete(kind, params, raw.is_disconnected)
        except QueueFull as exc:
            self.engine.metrics.requests.labels(endpoint, "busy").inc()
            return _busy(exc)
        except BadParameter as exc:  # e.g. a prompt longer than the context window
            self.engine.metrics.requests.labels(endpoint, "invalid").inc()
            return error(400, str(exc))
        except EngineError as exc:
            self.engine.metrics.requests.labels(endpoint, "error").inc()
            return error(500, str(exc), kind="server_error")
        self.engine.metrics.requests.labels(endpoint, "ok").inc()
        result["model"] = self.model_name
        result["usage"] = usage.as_dict()
        return JSONResponse(result)

    async def _stream(
        self, kind: str, params: dict[str, Any], include_usage: bool, raw: Request, endpoint: str
    ) -> Response:
        usage: list[Usage] = []
        chunks = self.engine.stream(kind, params, usage)
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
