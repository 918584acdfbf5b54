"""The public API: sign-in, serve, servers, models, the ext-authz check, the CloudEvent door.

Roles: a viewer reads; an operator serves and deletes its own servers; an admin
does everything. ``POST /serve`` records the server and publishes
``serve.requested`` (to ``K_SINK`` on Knative, to the embedded broker locally);
the pipeline does the rest.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from cloudevents.http import CloudEvent
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.dashboard import mount_dashboard
from modelserve.functions.api.schemas import (
    CatalogModel,
    Model,
    Models,
    ServeAccepted,
    ServeBody,
    Server,
    Token,
)
from modelserve.functions.api.security import auth_failure, requires
from modelserve.functions.api.upload import UPLOAD_BODY, receive_model
from modelserve.functions.appliers import Applier
from modelserve.functions.catalog.base import Catalog, CatalogError
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.errors import AuthError
from modelserve.shared.auth.tokens import (
    Claims,
    KeySet,
    TokenIssuer,
    TokenVerifier,
    bearer_token,
    public_jwks,
)
from modelserve.shared.auth.users import authenticate
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role, ServerRecord, ServerStatus
from modelserve.shared.settings import Settings
from modelserve.shared.store.base import ObjectStore

API_SOURCE = "/modelserve/api"
EVENT_POLL_SECONDS = 0.5
Publish = Callable[[CloudEvent], Awaitable[None]]


@dataclass
class ApiDeps:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    issuer: TokenIssuer
    verifier: TokenVerifier
    publish: Publish
    catalog: Catalog
    applier: Applier
    store: ObjectStore
    dashboard_dir: Path | None = None


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(
        title="modelserve",
        version="0.1.0",
        description="Serverless serving of GGUF models: serve one by name, get an "
        "OpenAI-compatible endpoint with its own UUID.",
    )
    viewer = Depends(requires(deps.verifier, Role.VIEWER))
    operator = Depends(requires(deps.verifier, Role.OPERATOR))
    base = str(deps.settings.public_base_url).rstrip("/")

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/status", tags=["meta"], include_in_schema=False)
    async def status_alias() -> dict[str, str]:  # the old deployment's health path
        return await healthz()

    @app.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks() -> dict[str, Any]:
        """Public verification keys (RS256/ES256), for JWT checks at the ingress."""
        return public_jwks(KeySet.from_settings(deps.settings))

    @app.post("/auth/token", response_model=Token, tags=["auth"])
    async def token(username: Annotated[str, Form()], password: Annotated[str, Form()]) -> Token:
        async with deps.sessions() as session:
            user = await authenticate(session, username, password)
        if user is None:
            raise HTTPException(
                401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
            )
        ttl = deps.settings.access_token_ttl_seconds
        return Token(
            access_token=deps.issuer.access_token(user.username, Role(user.role)), expires_in=ttl
        )

    @app.get("/auth", tags=["auth"])
    async def ext_authz(request: Request) -> Response:
        """For Envoy ext-authz / Traefik ForwardAuth: 200 with identity headers, or 401."""
        token = bearer_token(request.headers.get("authorization"))
        original = (
            request.headers.get("x-forwarded-uri") or request.headers.get("x-original-uri") or ""
        )
        first = original.lstrip("/").split("/", 1)[0]
        try:
            try:
                server = uuid.UUID(first)
            except ValueError:
                claims = deps.verifier.verify_access(token)
            else:
                claims = deps.verifier.verify_for_server(token, server)
        except AuthError as exc:
            raise auth_failure(exc) from None
        return Response(
            status_code=200,
            headers={
                "X-Auth-Subject": claims.subject,
                "X-Auth-Role": claims.role.value if claims.role else "",
                "X-Auth-Kind": claims.kind.value,
            },
        )

    async def start_serving(body: ServeBody, claims: Claims) -> ServeAccepted:
        server = uuid.uuid4()
        gateway = f"{base}/{server}"
        role = claims.role or Role.VIEWER
        request = ev.ServeRequest(
            model=body.model,
            replicas=body.replicas,
            max_replicas=body.max_replicas,
            runtime_params=body.runtime_params.model_dump(exclude_none=True),
            cpu=body.cpu,
            memory=body.memory,
            requested_by=claims.subject,
            role=role.value,
            namespace=body.namespace,
        )
        async with deps.sessions.begin() as session:
            await repo.get_or_create_server(
                session,
                server_uuid=server,
                model_name=body.model,
                owner=claims.subject,
                runtime_params=request.runtime_params,
                replicas=body.replicas,
                gateway_url=gateway,
            )
        event = ev.make_event(
            ev.SERVE_REQUESTED,
            ev.ServeRequested(request=request),
            source=API_SOURCE,
            subject=server,
            token=deps.issuer.pipeline_token(server, role=role),
        )
        try:
            await deps.publish(event)
        except Exception as exc:
            async with deps.sessions.begin() as session:
                await repo.update_server(
                    session,
                    server,
                    status=ServerStatus.FAILED,
                    status_message=f"the pipeline is unreachable: {exc}",
                )
            raise HTTPException(
                503, f"the pipeline is unreachable: {exc}", headers={"Retry-After": "10"}
            ) from None
        return ServeAccepted(
            server_uuid=server,
            status=ServerStatus.REQUESTED.value,
            status_url=f"/servers/{server}",
            gateway_url=gateway,
        )

    @app.post("/serve", status_code=202, response_model=ServeAccepted, tags=["servers"])
    async def serve(body: ServeBody, claims: Claims = operator) -> ServeAccepted:
        return await start_serving(body, claims)

    @app.post("/cloudevents", status_code=202, tags=["servers"])
    async def cloudevent_trigger(request: Request, claims: Claims = operator) -> ServeAccepted:
        """Start the pipeline from any CloudEvents producer (binary or structured mode)."""
        try:
            event = ev.decode(dict(request.headers), await request.body())
            if event["type"] != ev.SERVE_REQUESTED:
                raise ev.EventError(
                    f"only {ev.SERVE_REQUESTED} starts the pipeline, not {event['type']}"
                )
            data = event.get_data() or {}
            wanted = data.get("request", data) if isinstance(data, dict) else {}
            body = ServeBody.model_validate(
                {k: v for k, v in wanted.items() if k in ServeBody.model_fields}
            )
        except (ev.EventError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return await start_serving(body, claims)

    async def own(server: uuid.UUID) -> ServerRecord:
        async with deps.sessions() as session:
            try:
                return await repo.get_server(session, server)
            except repo.NotFound:
                raise HTTPException(404, f"no server {server}") from None

    @app.get("/servers", response_model=list[Server], tags=["servers"])
    async def servers(claims: Claims = viewer) -> list[Server]:
        async with deps.sessions() as session:
            return [Server.of(r) for r in await repo.list_servers(session)]

    @app.get("/servers/{server_uuid}", response_model=Server, tags=["servers"])
    async def server(server_uuid: uuid.UUID, claims: Claims = viewer) -> Server:
        return Server.of(await own(server_uuid))

    @app.delete("/servers/{server_uuid}", response_model=Server, tags=["servers"])
    async def delete_server(server_uuid: uuid.UUID, claims: Claims = operator) -> Server:
        record = await own(server_uuid)
        if claims.role is not Role.ADMIN and record.owner != claims.subject:
            raise HTTPException(403, "operators may delete only their own servers")
        namespace = record.namespace or deps.settings.namespace
        await deps.applier.delete(namespace, ms.resource_name(server_uuid))
        async with deps.sessions.begin() as session:
            updated = await repo.update_server(
                session,
                server_uuid,
                status=ServerStatus.DELETING,
                status_message=f"deletion requested by {claims.subject}",
            )
        return Server.of(updated)

    @app.get("/models", response_model=Models, tags=["models"])
    async def models(claims: Claims = viewer) -> Models:
        async with deps.sessions() as session:
            mirrored = [Model.of(m) for m in await repo.list_models(session)]
        names = {m.model_name for m in mirrored}
        try:
            entries = await deps.catalog.entries()
        except CatalogError:
            entries = []
        return Models(
            mirrored=mirrored,
            catalog=[
                CatalogModel(
                    name=e.name,
                    size_bytes=e.size_bytes,
                    file_type=e.file_type,
                    mirrored=e.name in names,
                )
                for e in entries
            ],
        )

    @app.put(
        "/models/{name}",
        status_code=201,
        response_model=Model,
        tags=["models"],
        openapi_extra=UPLOAD_BODY,
    )
    async def upload_model(
        name: str,
        request: Request,
        claims: Claims = operator,
        content_sha256: Annotated[
            str | None, Header(alias="X-Content-SHA256", pattern=r"^[0-9a-fA-F]{64}$")
        ] = None,
    ) -> Model:
        """Upload a GGUF as model ``name``: verified, stored, recorded (``models push``).

        The body is the raw file (``application/octet-stream``). With
        ``X-Content-SHA256`` (and Content-Length) the upload must match them.
        """
        return Model.of(
            await receive_model(
                name,
                request,
                store=deps.store,
                sessions=deps.sessions,
                work_dir=deps.settings.resolved_work_dir,
                uploader=claims.subject,
                expected_sha256=content_sha256,
            )
        )

    @app.get(
        "/models/available",
        response_model=list[CatalogModel],
        tags=["models"],
        include_in_schema=False,
    )
    async def models_available(claims: Claims = viewer) -> list[CatalogModel]:
        return (await models(claims)).catalog  # the old deployment's path

    @app.get("/events", tags=["servers"])
    async def status_events(request: Request, claims: Claims = viewer) -> StreamingResponse:
        """Server-sent events: one ``server`` event per status change, in order."""

        async def stream() -> AsyncIterator[str]:
            seen: dict[uuid.UUID, tuple[str, Any, Any]] = {}
            while not await request.is_disconnected():
                async with deps.sessions() as session:
                    rows = (
                        (
                            await session.execute(
                                select(ServerRecord).order_by(ServerRecord.updated_at)
                            )
                        )
                        .scalars()
                        .all()
                    )
                for row in rows:
                    key = (row.status, row.progress, row.status_message)
                    if seen.get(row.server_uuid) != key:
                        seen[row.server_uuid] = key
                        body = Server.of(row).model_dump(mode="json")
                        yield f"event: server\ndata: {json.dumps(body)}\n\n"
                await asyncio.sleep(EVENT_POLL_SECONDS)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    mount_dashboard(app, deps.dashboard_dir)
    return app
