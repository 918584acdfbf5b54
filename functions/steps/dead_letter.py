"""The dead-letter sink: an event whose delivery ran out of retries fails its server.

Without it a server whose pipeline event could not be delivered (a function that
kept answering 503, a crashed node) would stay "checking" or "mirroring" forever.
"""

from __future__ import annotations

from cloudevents.http import CloudEvent

from modelserve.functions.steps.context import StepContext
from modelserve.shared import events as ev
from modelserve.shared import lifecycle
from modelserve.shared.db import repo
from modelserve.shared.lifecycle import ServerStatus


async def handle(event: CloudEvent, ctx: StepContext) -> None:
    server = ev.subject_uuid(event)
    code = event.get("knativeerrorcode") or "no answer"
    destination = event.get("knativeerrordest") or "its step"
    message = (
        f"the pipeline gave up: {event['type'].removeprefix(ev.TYPE_PREFIX)} could not be "
        f"delivered to {destination} ({code})"
    )
    try:  # refused when the server got further (or was deleted): the truth stays
        await lifecycle.move(ctx.sessions, server, ServerStatus.FAILED, status_message=message)
    except repo.NotFound:
        return None
    return None
