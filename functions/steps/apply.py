"""contract.approved -> server.applied: write the ModelServe (Kubernetes or local backend)."""

from __future__ import annotations

import math

from cloudevents.http import CloudEvent

from modelserve.functions.steps.context import StepContext, Superseded
from modelserve.shared import events as ev
from modelserve.shared import lifecycle, tracing
from modelserve.shared import modelserve as ms
from modelserve.shared.lifecycle import ServerStatus

STEP = "apply"


async def handle(event: CloudEvent, ctx: StepContext) -> CloudEvent:
    approved = ev.payload(event, ev.ContractApproved)
    request, model, server = approved.request, approved.model, ev.subject_uuid(event)
    namespace = request.namespace or ctx.settings.namespace
    # The namespace first: the admission webhook admits a ModelServe for this server
    # only there (a replayed token cannot place a second one elsewhere).
    await ctx.advance(
        server,
        ServerStatus.APPLYING,
        status_message="applying the ModelServe",
        namespace=namespace,
    )
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
    manifest = ms.manifest(
        spec,
        namespace,
        auth_token=ctx.token_for(event),  # the requester and role the chain was started with
        traceparent=tracing.current_traceparent(),  # this step's span: the operator's parent
    )
    resource, created = await ctx.applier.apply(manifest)
    moved = await lifecycle.move(
        ctx.sessions,
        server,
        ServerStatus.PENDING,
        namespace=namespace,
        inference_service=ms.resource_name(server),
        model_uuid=model.model_uuid,
        status_message=f"ModelServe {resource} {'created' if created else 'already there'}",
    )
    if not moved:
        if moved.gone:  # deleted (or failed) while we applied: take the ModelServe back
            await ctx.applier.delete(namespace, ms.resource_name(server))
        raise Superseded(server, ServerStatus.PENDING, moved.status)
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
