"""The gateway: ``/<server-uuid>/v1/...`` -> that server's runtime, behind JWT auth.

- A valid credential is required: an API key (for this server or all its
  owner's), an access token with a role, or a token scoped to exactly this
  server's UUID; revoked keys and disabled users' credentials are refused
  (``AccessGuard``: a short cache, no database read per request for them).
- An unknown UUID is 404; a server that is still starting is 503 with
  ``Retry-After``; one that failed or was deleted is 410 with the reason.
- In local mode an idle server is woken through the ``wake`` hook (the local
  backend's ``ensure_running``) and the request waits for it, bounded.
- Bodies stream both ways without buffering (a completion request's small JSON
  body is read first, to ask for its usage); when the client goes away the
  upstream request is closed, which stops the runtime's generation.
- Routing and metering are decided on one path: the raw path as sent, which
  must already be canonical (``paths.py``: no percent-encoding, no empty or dot
  segments; else 400), and the upstream URL is built from its parts.
- Every request that can do work (any method but GET, HEAD, OPTIONS, on any
  path) is metered per server, user and key (``usage.py``): the answer's usage
  is read as it passes and written in batches, off the request's path. Under a
  budget a request's worst case must fit in what is left (``budget.py``).
- The client's Authorization never reaches a runtime; the gateway sends the
  runtimes' internal credential in its place, which is all a runtime accepts
  (runtime/internal_auth.py): a runtime reached any other way answers 401.
- No database read per request on the hot path: a server's route (status and
  runtime URL) is kept for ``auth_cache_ttl`` seconds and dropped the moment this
  process commits a change to its record (``Routes``); a JWT's verification is
  kept until its exp (``AccessGuard``). Upstream connections are pooled.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions import paths
from modelserve.functions.api.security import auth_failure
from modelserve.functions.budget import BudgetGate, OverBudget, Ticket, seconds_to_midnight
from modelserve.functions.limits import BodyLimit
from modelserve.functions.usage import (
    SAFE_METHODS,
    BadMeteredRequest,
    Prepared,
    UsageMeter,
    UsageRecorder,
    WorstCaseOverBudget,
    prepare_request,
)
from modelserve.shared import logs, tracing
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.guard import AccessGuard
from modelserve.shared.auth.tokens import TokenVerifier, bearer_token
from modelserve.shared.cache import TtlCache
from modelserve.shared.cache_scope import CACHE_SCOPE_HEADER, cache_scope
from modelserve.shared.db import changes, repo
from modelserve.shared.lifecycle import GONE, PIPELINE, ServerStatus
from modelserve.shared.metrics import UNKNOWN_SERVER, GatewayMetrics
from modelserve.shared.metrics_access import exposition, sees_identities

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
# A non-streamed answer up to this size (a completion's JSON) is read whole and sent
# in one message; longer or unknown-length ones stream through.
WHOLE_BODY_BYTES = 256 * 1024


def upstream_client(
    network: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """The gateway's own client for the proxy hop, shared by nobody else.

    No pool limit: a request must never wait for a free connection behind a
    hundred streams (httpx's default pool of 100 with a 30 s wait turned load into
    502s); a busy runtime answers 503 itself. ``network`` wraps the connection
    pool where the cluster's own network is missing (the tests' stand-in for
    cluster DNS and kube-proxy, support/cluster_network.py); nothing else sets it.
    """
    pool = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=256,
            keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS,
        )
    )
    return httpx.AsyncClient(
        transport=network(pool) if network is not None else pool,
        timeout=httpx.Timeout(30, read=None),
    )


def _small(response: httpx.Response) -> bool:
    """An answer of known length up to ``WHOLE_BODY_BYTES``: relayed in one piece."""
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= WHOLE_BODY_BYTES


def _stream_error(server: uuid.UUID, exc: Exception) -> bytes:
    """An OpenAI-style error event, so a streaming client learns the stream broke."""
    error = {
        "message": f"server {server} stopped answering mid-stream: {type(exc).__name__}",
        "type": "server_error",
        "code": 502,
    }
    return f"data: {json.dumps({'error': error})}\n\n".encode()


@dataclass(frozen=True)
class Route:
    """What the gateway needs of a server record to route a request to it."""

    status: ServerStatus
    message: str | None
    internal_url: str | None


class Routes:
    """server -> its :class:`Route`, read at most once per ``ttl`` per server.

    A change this process commits (any status move, the runtime URL with it)
    drops the server's route at once (``changes.watch``), so here a deleted or
    failed server is refused from the next request on; one written by another
    process (the operator in a cluster) is seen within ``ttl``. An unknown
    server is not kept: it is read again (a 404 is only for valid credentials).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._cache: TtlCache[uuid.UUID, Route] = TtlCache(ttl, clock)
        self.loads = 0  # database reads, for tests
        changes.watch(self)

    async def get(self, server: uuid.UUID) -> Route:
        """Raises ``repo.NotFound`` for an unknown server."""
        return await self._cache.get(server, self._load)

    def server_changed(self, server: uuid.UUID) -> None:
        self._cache.invalidate(server)

    async def _load(self, server: uuid.UUID) -> Route:
        self.loads += 1
        async with self._sessions() as session:
            record = await repo.get_server(session, server)
            return Route(ServerStatus(record.status), record.status_message, record.internal_url)


@dataclass
class GatewayDeps:
    verifier: TokenVerifier
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    wake: Wake | None = None  # local mode: start an idle server and return its URL
    access_guard: AccessGuard | None = None  # shared with the API in the embedded stack
    auth_cache_ttl: float = 1.0
    usage: UsageRecorder | None = None  # default: one writing to ``sessions``
    max_body_bytes: int = 1024 * 1024  # settings.max_body_bytes
    # What /metrics serves; the embedded stack passes the process's one.
    registry: CollectorRegistry | None = None
    metrics_token: str | None = None  # settings.metrics_token: /metrics with identities
    # The runtimes' internal credential (settings.internal_token; the embedded stack makes
    # one per start): sent as the only Authorization a runtime ever sees.
    runtime_token: str | None = None

    def __post_init__(self) -> None:
        self.guard: AccessGuard = self.access_guard or AccessGuard(
            self.verifier, self.sessions, ttl=self.auth_cache_ttl
        )
        self.metrics_registry = self.registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.metrics_registry)
        self.recorder: UsageRecorder = self.usage or UsageRecorder(
            self.sessions, registry=self.metrics_registry
        )
        self.budgets = BudgetGate(self.sessions, self.recorder, ttl=self.auth_cache_ttl)
        self.routes = Routes(self.sessions, ttl=self.auth_cache_ttl)


@dataclass
class _Seen:
    """What the metrics of one request need: when it arrived, whose server it is."""

    arrived: float
    label: str = UNKNOWN_SERVER


async def _counted(stream: AsyncIterator[bytes], counter: Any) -> AsyncIterator[bytes]:
    """The request body as it streams upstream, its bytes counted on the way."""
    async for chunk in stream:
        counter.inc(len(chunk))
        yield chunk


def over_budget(exc: OverBudget | WorstCaseOverBudget) -> JSONResponse:
    """OpenAI's shape for a quota refusal, so clients raise their RateLimitError."""
    retry_after = exc.retry_after if isinstance(exc, OverBudget) else seconds_to_midnight()
    return JSONResponse(
        {
            "error": {
                "message": str(exc),
                "type": "insufficient_quota",
                "param": None,
                "code": "budget_exceeded",
            }
        },
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


def create_gateway(deps: GatewayDeps) -> FastAPI:
    app = FastAPI(title="modelserve gateway", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=deps.max_body_bytes)
    app.router.on_shutdown.append(deps.guard.flush)  # the last batch of last-used times
    app.router.on_shutdown.append(deps.recorder.close)  # and of usage
    app.add_middleware(logs.ServerContext)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Requests, latency, bytes and streams per server; tokens per server, user and key.

        Those labels only for the scrape token or an admin; anyone else gets the
        same families with them summed away (shared/metrics_access.py).
        """
        full = await sees_identities(
            request.headers.get("authorization"), deps.metrics_token, deps.guard
        )
        return Response(
            exposition(deps.metrics_registry, identities=full), media_type=CONTENT_TYPE_LATEST
        )

    async def upstream_url(server: uuid.UUID, seen: _Seen) -> str:
        try:
            route = await deps.routes.get(server)
        except repo.NotFound:
            raise HTTPException(404, f"no server {server}") from None
        seen.label = str(server)  # it exists: a bounded label from here on
        status = route.status
        if status in GONE:
            raise HTTPException(
                410,
                f"server {server} is {status.value}: {route.message or ''}".rstrip(": "),
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
        if status is ServerStatus.READY and route.internal_url:
            return route.internal_url
        if status in STARTING or status is ServerStatus.IDLE:
            raise HTTPException(
                503,
                f"server {server} is {status.value}; try again shortly",
                headers={"Retry-After": RETRY_SECONDS},
            )
        raise HTTPException(
            503, f"server {server} has no endpoint yet", headers={"Retry-After": RETRY_SECONDS}
        )

    async def proxy(request: Request) -> Response:
        """Relay one request, counting it under its server once that server is known.

        A plain Starlette route: FastAPI's parameter solving and validation cost
        more than everything else the gateway does to a request, and it has no
        parameters to validate.
        """
        seen = _Seen(time.perf_counter())
        try:
            response = await relay(request, seen)
        except HTTPException as exc:
            deps.metrics.requests.labels(seen.label, str(exc.status_code)).inc()
            raise
        except Exception:
            deps.metrics.requests.labels(seen.label, "500").inc()
            raise
        deps.metrics.requests.labels(seen.label, str(response.status_code)).inc()
        return response

    async def relay(request: Request, seen: _Seen) -> Response:
        try:  # the path as sent, not as decoded: routing and metering see one path
            target = paths.parse(request.scope.get("raw_path") or request.url.path.encode())
            query = paths.check_query(request.scope.get("query_string", b""))
        except paths.NotAServer as exc:
            raise HTTPException(404, str(exc)) from None
        except paths.AmbiguousPath as exc:
            raise HTTPException(400, str(exc)) from None
        server = target.server
        try:
            who = await deps.guard.for_server(
                bearer_token(request.headers.get("authorization")), server
            )
        except AuthError as exc:
            raise auth_failure(exc) from None
        # One rule: every request that can do work is metered and budgeted, on any path.
        metered = request.method not in SAFE_METHODS
        prepared: Prepared | None = None
        if metered:
            try:
                prepared = prepare_request(await request.body())
            except BadMeteredRequest as exc:
                raise HTTPException(400, str(exc)) from None
        ticket: Ticket | None = None
        if prepared is not None and who.budgets:
            try:
                ticket = await deps.budgets.admit(who.budgets)
            except OverBudget as exc:
                return over_budget(exc)
            except TimeoutError:
                raise HTTPException(
                    503, "too many requests wait on this budget", headers={"Retry-After": "5"}
                ) from None
            try:
                prepared.cap(ticket.left)
            except WorstCaseOverBudget as exc:
                ticket.done(0)
                return over_budget(exc)
        span = tracing.start("gateway", request.headers.get("traceparent"), server_uuid=str(server))
        try:
            base = await upstream_url(server, seen)
            label = seen.label
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            headers.update(tracing.headers(span))  # the runtime's spans are its children
            # Whose prompt: the runtime shares cached prefixes only within one caller.
            headers[CACHE_SCOPE_HEADER] = cache_scope(who.kind, who.key_id or who.subject)
            if deps.runtime_token is not None:  # the client's own was dropped (HOP_BY_HOP)
                headers["authorization"] = f"Bearer {deps.runtime_token}"
            content: Any = _counted(request.stream(), deps.metrics.request_bytes.labels(label))
            if prepared is not None:
                content = prepared.body
                deps.metrics.request_bytes.labels(label).inc(len(content))
                headers["accept-encoding"] = "identity"  # the meter reads the answer as sent
            url = paths.upstream_url(base, target, query)  # from the validated parts
            upstream = deps.http.build_request(
                request.method, url, headers=headers, content=content
            )
            deps.metrics.added_latency.labels(label).observe(time.perf_counter() - seen.arrived)
            try:
                response = await deps.http.send(upstream, stream=True)
            except httpx.TransportError as exc:
                log.warning("server %s did not answer at %s: %r", server, base, exc)
                raise HTTPException(
                    502,
                    f"server {server} did not answer: {type(exc).__name__} {exc}".rstrip(),
                    headers={"Retry-After": RETRY_SECONDS},  # a restarted runtime is back soon
                ) from None
        except BaseException:
            span.end()
            if ticket is not None:
                ticket.done(0)
            raise
        content_type = response.headers.get("content-type", "")
        meter = (
            UsageMeter(content_type, prepared.hide_usage, prepared.request_tokens)
            if prepared is not None and response.status_code < 400
            else None
        )
        streaming = content_type.startswith("text/event-stream")
        relayed = deps.metrics.response_bytes.labels(label)
        answer_headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}

        async def settle() -> None:
            """The answer is over (sent, cut, or its client left): close it, meter it."""
            await response.aclose()  # a client that left stops the runtime's work
            tokens = 0
            if meter is not None:  # a cut stream counts what was sent
                prompt, completion = meter.finish()
                deps.recorder.record(server, who.subject, who.key_id, prompt, completion)
                tokens = prompt + completion
            if ticket is not None:
                ticket.done(tokens)

        if not streaming and _small(response):
            # Finished upstream before its headers came (it has a length): nothing to
            # stop if the client leaves, so one read and one send, no streaming machinery.
            passed: bytes | None = None
            try:
                passed = b"".join([chunk async for chunk in response.aiter_raw()])
                if meter is not None:
                    passed = meter.feed(passed) + meter.rest()
            except httpx.HTTPError as exc:  # the runtime died mid-body
                log.warning("server %s broke off a response: %r", server, exc)
            finally:
                await settle()
            if passed is None:
                raise HTTPException(
                    502, f"server {server} broke off its answer", headers={"Retry-After": "5"}
                )
            relayed.inc(len(passed))
            return Response(passed, status_code=response.status_code, headers=answer_headers)

        streams = deps.metrics.streams.labels(label)

        async def body() -> AsyncIterator[bytes]:
            if streaming:  # counted from the first read: a body never read ends nothing
                streams.inc()
            try:
                async for chunk in response.aiter_raw():
                    passed = chunk if meter is None else meter.feed(chunk)
                    if passed:
                        relayed.inc(len(passed))
                        yield passed
                if meter is not None and (rest := meter.rest()):
                    relayed.inc(len(rest))
                    yield rest
            except httpx.HTTPError as exc:  # the runtime died mid-body
                log.warning("server %s broke off a response: %r", server, exc)
                if meter is not None and (rest := meter.rest()):
                    yield rest  # what the runtime did send still reaches the client
                if streaming:
                    yield _stream_error(server, exc)
            finally:
                span.end()
                if streaming:
                    streams.dec()
                await settle()

        stream = body()
        if ticket is not None:
            # A body never iterated (the client left first) has no finally to run:
            # its collection lets the budget's next request in.
            weakref.finalize(stream, ticket.done, 0)
        return StreamingResponse(stream, status_code=response.status_code, headers=answer_headers)

    app.router.add_route(
        "/{server_uuid}/{path:path}",
        proxy,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    return app
