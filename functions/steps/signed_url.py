"""model.missing -> model.url-signed: ask the upstream catalog for a time-limited URL."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from modelserve.functions.steps.context import StepContext
from modelserve.shared import events as ev
from modelserve.shared.lifecycle import ServerStatus

STEP = "signed-url"


async def handle(event: CloudEvent, ctx: StepContext) -> CloudEvent:
    request = ev.payload(event, ev.ModelMissing).request
    server = ev.subject_uuid(event)
    await ctx.advance(
        server,
        ServerStatus.MIRRORING,
        progress=0.0,
        status_message=f"asking the catalog for {request.model}",
    )
    signed = await ctx.catalog.sign(request.model)  # ModelNotInCatalog ends the chain
    return ctx.reply(
        STEP,
        event,
        ev.MODEL_URL_SIGNED,
        ev.ModelUrlSigned(
            request=request,
            url=signed.url,
            expires_at=signed.expires_at,
            sha256=signed.sha256,
            size_bytes=signed.size_bytes,
            file_type=signed.file_type,
            catalog_id=signed.catalog_id,
        ),
    )
