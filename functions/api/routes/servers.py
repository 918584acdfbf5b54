"""Serving a model and the servers it makes: create (also from a CloudEvent), read, delete.

``POST /serve`` records the server and publishes ``serve.requested`` (to
``K_SINK`` on Knative, to the embedded broker locally); the pipeline does the
rest. Every status write goes through the lifecycle.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Query, Request
from opentelemetry.trace import SpanKind

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.per_user import PerUserLimit
from modelserve.functions.api.schemas import (
    ServeAccepted,
    ServeBody,
    Server,
    ServerLogs,
    ServerSeries,
)
from modelserve.functions.api.series import PrometheusError
from modelserve.functions.serve_request import open_serve
from modelserve.shared import events as ev
from modelserve.shared import lifecycle, tracing
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role, ServerRecord
from modelserve.shared.lifecycle import ServerStatus

API_SOURCE = "/modelserve/api"
MAX_LOG_LINES = 2000


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["servers"])
    viewer, operator = deps.role(Role.VIEWER), deps.role(Role.OPERATOR)
    admin = deps.role(Role.ADMIN)
    series_queries = PerUserLimit("chart queries", deps.settings.series_queries_per_user)

    async def start_serving(body: ServeBody, claims: Claims) -> ServeAccepted:
        server = uuid.uuid4()
        gateway = ms.gateway_url(deps.settings.public_base_url, server)
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
        with tracing.continued(
            "serve", None, SpanKind.PRODUCER, server_uuid=str(server), model=body.model
        ):
            return await publish_serve(server, gateway, request)

    async def publish_serve(
        server: uuid.UUID, gateway: str, request: ev.ServeRequest
    ) -> ServeAccepted:
        event = await open_serve(
            deps.sessions,
            deps.issuer,
            server=server,
            request=request,
            gateway_url=gateway,
            source=API_SOURCE,
        )
        try:
            await deps.publish(event)
        except Exception as exc:
            await lifecycle.move(
                deps.sessions,
                server,
                ServerStatus.FAILED,
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

    @api.post("/serve", status_code=202, response_model=ServeAccepted)
    async def serve(body: ServeBody, claims: Claims = operator) -> ServeAccepted:
        return await start_serving(body, claims)

    @api.post("/cloudevents", status_code=202)
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

    async def one(server: uuid.UUID) -> ServerRecord:
        async with deps.sessions() as session:
            try:
                return await repo.get_server(session, server, fresh=True)
            except repo.NotFound:
                raise HTTPException(404, f"no server {server}") from None

    @api.get("/servers", response_model=list[Server])
    async def servers(claims: Claims = viewer) -> list[Server]:
        async with deps.sessions() as session:
            return [Server.of(r) for r in await repo.list_servers(session)]

    @api.get("/servers/{server_uuid}", response_model=Server)
    async def server(server_uuid: uuid.UUID, claims: Claims = viewer) -> Server:
        return Server.of(await one(server_uuid))

    @api.get("/servers/{server_uuid}/series", response_model=ServerSeries)
    async def server_series(
        server_uuid: uuid.UUID,
        claims: Claims = viewer,
        minutes: int = Query(60, ge=1, le=60),
    ) -> ServerSeries:
        """The server's charts over the last ``minutes`` (tokens/s, latencies, slots,
        memory, CPU): the embedded stack's own samples, or Prometheus' on Kubernetes."""
        await one(server_uuid)
        if deps.series is None:
            raise HTTPException(503, "no metrics source: set MODELSERVE_PROMETHEUS_URL")
        with series_queries.open(claims.subject):  # 429 past the user's open queries
            try:
                window = await deps.series.window(server_uuid, minutes * 60.0)
            except PrometheusError as exc:
                raise HTTPException(502, str(exc)) from None
        return ServerSeries(step_seconds=window.step_seconds, t=window.t, series=window.series)

    @api.get("/servers/{server_uuid}/logs", response_model=ServerLogs)
    async def server_logs(
        server_uuid: uuid.UUID,
        claims: Claims = admin,
        lines: int = Query(200, ge=1, le=MAX_LOG_LINES),
    ) -> ServerLogs:
        """The last ``lines`` lines of the server's runtime output (admins only: a log
        may show prompts and paths). The local backend keeps them; on Kubernetes the
        pods' logs are the cluster's, read with ``kubectl logs``."""
        record = await one(server_uuid)
        if deps.runtime_logs is None:
            namespace = record.namespace or deps.settings.namespace
            raise HTTPException(
                501,
                "runtime logs are the cluster's here: kubectl logs -n "
                f"{namespace} -l serving.kserve.io/inferenceservice="
                f"{ms.resource_name(server_uuid)} -c kserve-container --tail={lines}",
            )
        return ServerLogs(
            server_uuid=server_uuid, lines=await deps.runtime_logs(server_uuid, lines)
        )

    @api.delete("/servers/{server_uuid}", response_model=Server)
    async def delete_server(server_uuid: uuid.UUID, claims: Claims = operator) -> Server:
        """Stop and remove a server at any point of its life; the model stays mirrored.

        Answers ``deleted`` when nothing had been applied yet, ``deleting`` while the
        backend removes the runtime (it then writes ``deleted``).
        """
        record = await one(server_uuid)
        if claims.role is not Role.ADMIN and record.owner != claims.subject:
            raise HTTPException(403, "operators may delete only their own servers")
        moved = await lifecycle.move(
            deps.sessions,
            server_uuid,
            ServerStatus.DELETING,
            status_message=f"deletion requested by {claims.subject}",
        )
        if moved or moved.status is ServerStatus.DELETING:  # DELETE is idempotent
            namespace = record.namespace or deps.settings.namespace
            if not await deps.applier.delete(namespace, ms.resource_name(server_uuid)):
                # No ModelServe (yet): nothing runs, so nobody else will finish this.
                # A pipeline step that applies one later finds the server gone and
                # removes it again.
                await lifecycle.move(
                    deps.sessions,
                    server_uuid,
                    ServerStatus.DELETED,
                    status_message=f"deleted by {claims.subject}",
                )
        return Server.of(await one(server_uuid))

    return api
