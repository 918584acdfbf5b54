"""serve.requested -> model.available (the GGUF is in our store) or model.missing."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from modelserve.functions.steps.context import StepContext
from modelserve.shared import events as ev
from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord
from modelserve.shared.lifecycle import ServerStatus

STEP = "availability"


def model_ref(record: ModelRecord) -> ev.ModelRef:
    return ev.ModelRef(
        model_uuid=record.model_uuid,
        model_name=record.model_name,
        object_path=record.object_path,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        architecture=record.architecture,
        file_type=record.file_type,
        parameter_count=record.parameter_count,
        context_length=record.context_length,
    )


async def handle(event: CloudEvent, ctx: StepContext) -> CloudEvent:
    request = ev.payload(event, ev.ServeRequested).request
    server = ev.subject_uuid(event)
    try:  # the API records every server before it publishes serve.requested
        await ctx.advance(
            server,
            ServerStatus.CHECKING,
            status_message=f"looking for {request.model} in the store",
        )
    except repo.NotFound:
        raise ev.EventError(f"no server {server} was requested through the API") from None
    async with ctx.sessions() as session:
        record = await repo.get_model_by_name(session, request.model)
    if record is not None and await ctx.store.exists(record.object_path):
        return ctx.reply(
            STEP,
            event,
            ev.MODEL_AVAILABLE,
            ev.ModelAvailable(request=request, model=model_ref(record)),
        )
    return ctx.reply(STEP, event, ev.MODEL_MISSING, ev.ModelMissing(request=request))
