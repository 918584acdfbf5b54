"""contract.approved -> server.applied: write the ModelServe (Kubernetes or local backend)."""

from __future__ import annotations

import math

from cloudevents.http import CloudEvent

from modelserve.functions.steps.context import StepContext
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role, ServerStatus

STEP = "apply"


async def handle(event: CloudEvent, ctx: StepContext) -> CloudEvent:
    approved = ev.payload(event, ev.ContractApproved)
    request, model, server = approved.request, approved.model, ev.subject_uuid(event)
    namespace = request.namespace or ctx.settings.namespace
    await ctx.set_status(server, ServerStatus.APPLYING, status_message="applying the ModelServe")
    spec = ms.ModelServeSpec(
        server_uuid=server,
        model_name=model.model_name,
        model_uuid=model.model_uuid,
        storage_uri=ctx.store.uri(model.object_path),
        sha256=model.sha256,
        runtime=ms.RuntimeParams.model_validate(request.runtime_params),
        resources=ms.Resources(
            cpu=request.cpu,
            memory=request.memory or f"{math.ceil(approved.memory_bytes / 2**20)}Mi",
        ),
        replicas=ms.Replicas(
            min=request.replicas, max=request.max_replicas or max(request.replicas, 1)
        ),
    )
    manifest = ms.manifest(spec, namespace, auth_token=ctx.token_for(event, Role(request.role)))
    resource, created = await ctx.applier.apply(manifest)
    async with ctx.sessions.begin() as session:
        await repo.advance_server(
            session,
            server,
            ServerStatus.PENDING,
            namespace=namespace,
            inference_service=ms.resource_name(server),
            model_uuid=model.model_uuid,
            status_message=f"ModelServe {resource} {'created' if created else 'already there'}",
        )
    return ctx.reply(
        STEP,
        event,
        ev.SERVER_APPLIED,
        ev.ServerApplied(
            request=request,
            model=model,
            resource=resource,
        ),
    )
