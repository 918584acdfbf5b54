"""The gateway: ``/<server-uuid>/v1/...`` -> that server's runtime, behind JWT auth.

- A valid JWT is required: an access token with a role, or a token scoped to
  exactly this server's UUID.
- An unknown UUID is 404; a server that is still starting is 503 with
  ``Retry-After``; one that failed or was deleted is 410 with the reason.
- In local mode an idle server is woken through the ``wake`` hook (the local
  backend's ``ensure_running``) and the request waits for it, bounded.
- Bodies stream both ways without buffering; when the client goes away the
  upstream request is closed, which stops the runtime's generation.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.security import auth_failure
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.tokens import TokenVerifier, bearer_token
from modelserve.shared.db import repo
from modelserve.shared.lifecycle import GONE, PIPELINE, ServerStatus

Wake = Callable[[uuid.UUID], Awaitable[str]]
log = logging.getLogger(__name__)
RETRY_SECONDS = "5"
# Below uvicorn's 5 s keep-alive (the runtime's server): a connection is never reused
# just as the runtime closes it, which reset a request in a few thousand.
UPSTREAM_KEEPALIVE_SECONDS = 2.0
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
}
STARTING = {*PIPELINE, ServerStatus.LOADING}


def upstream_client() -> httpx.AsyncClient:
    """The gateway's own client for the proxy hop, shared by nobody else.

    No pool limit: a request must never wait for a free connection behind a
    hundred streams (httpx's default pool of 100 with a 30 s wait turned load into
    502s); a busy runtime answers 503 itself.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30, read=None),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=256,
            keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS,
        ),
    )


def _stream_error(server: uuid.UUID, exc: Exception) -> bytes:
    """An OpenAI-style error event, so a streaming client learns the stream broke."""
    error = {
        "message": f"server {server} stopped answering mid-stream: {type(exc).__name__}",
        "type": "server_error",
        "code": 502,
    }
    return f"data: {json.dumps({'error': error})}\n\n".encode()


@dataclass
class GatewayDeps:
    verifier: TokenVerifier
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    wake: Wake | None = None  # local mode: start an idle server and return its URL


def create_gateway(deps: GatewayDeps) -> FastAPI:
    app = FastAPI(title="modelserve gateway", openapi_url=None, docs_url=None, redoc_url=None)

    async def upstream_url(server: uuid.UUID) -> str:
        async with deps.sessions() as session:
            try:
                record = await repo.get_server(session, server)
            except repo.NotFound:
                raise HTTPException(404, f"no server {server}") from None
        status = ServerStatus(record.status)
        if status in GONE:
            raise HTTPException(
                410,
                f"server {server} is {status.value}: {record.status_message or ''}".rstrip(": "),
            )
        if deps.wake is not None and status in {
            ServerStatus.IDLE,
            ServerStatus.READY,
            ServerStatus.LOADING,
        }:
            try:
                return await deps.wake(server)
            except Exception as exc:  # the backend says why it could not start
                raise HTTPException(503, str(exc), headers={"Retry-After": RETRY_SECONDS}) from None
        if status is ServerStatus.READY and record.internal_url:
            return record.internal_url
        if status in STARTING or status is ServerStatus.IDLE:
            raise HTTPException(
                503,
                f"server {server} is {status.value}; try again shortly",
                headers={"Retry-After": RETRY_SECONDS},
            )
        raise HTTPException(
            503, f"server {server} has no endpoint yet", headers={"Retry-After": RETRY_SECONDS}
        )

    @app.api_route(
        "/{server_uuid}/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    async def proxy(server_uuid: str, path: str, request: Request) -> StreamingResponse:
        try:
            server = uuid.UUID(server_uuid)
        except ValueError:
            raise HTTPException(404, f"{server_uuid!r} is not a server UUID") from None
        try:
            deps.verifier.verify_for_server(
                bearer_token(request.headers.get("authorization")), server
            )
        except AuthError as exc:
            raise auth_failure(exc) from None
        base = await upstream_url(server)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = deps.http.build_request(
            request.method,
            f"{base.rstrip('/')}/{path}",
            params=request.query_params,
            headers=headers,
            content=request.stream(),
        )
        try:
            response = await deps.http.send(upstream, stream=True)
        except httpx.TransportError as exc:
            log.warning("server %s did not answer at %s: %r", server, base, exc)
            raise HTTPException(
                502,
                f"server {server} did not answer: {type(exc).__name__} {exc}".rstrip(),
                headers={"Retry-After": RETRY_SECONDS},  # a restarted runtime is back soon
            ) from None
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:  # the runtime died mid-body
                log.warning("server %s broke off a response: %r", server, exc)
                if streaming:
                    yield _stream_error(server, exc)
            finally:
                await response.aclose()  # a client that left stops the runtime's work

        return StreamingResponse(
            body(),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP},
        )

    return app
