"""model.url-signed -> model.available: copy the GGUF into our store, verified.

The download streams into the store's put as it arrives (one pass: fetched,
hashed, uploaded), and is kept in scratch space on the way so a retry resumes
it. The store commits the object only once the stream ended with the expected
size and sha256 and a readable GGUF header, so nothing unverified is ever
visible there. One download per model: the first request takes a lease on the
model's name; others for the same model wait for the model record to appear
instead of downloading again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from cloudevents.http import CloudEvent

from modelserve.functions.catalog.base import SignedModel
from modelserve.functions.download import Download, DownloadError
from modelserve.functions.ingest import LEASE_TTL, IngestError, ingest_stream, lease_name
from modelserve.functions.steps.availability import model_ref
from modelserve.functions.steps.context import RetryLater, StepContext, StepFailure, Superseded
from modelserve.shared import events as ev
from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord
from modelserve.shared.lifecycle import ServerStatus, transition

STEP = "mirror"
WAIT_POLL_SECONDS = 0.5
log = logging.getLogger(__name__)


async def _mirrored(ctx: StepContext, name: str) -> ModelRecord | None:
    async with ctx.sessions() as session:
        record = await repo.get_model_by_name(session, name)
    if record is not None and await ctx.store.exists(record.object_path):
        return record
    return None


async def handle(event: CloudEvent, ctx: StepContext, *, wait_seconds: float = 1800) -> CloudEvent:
    signed = ev.payload(event, ev.ModelUrlSigned)
    request, server, name = signed.request, ev.subject_uuid(event), signed.request.model
    deadline = time.monotonic() + wait_seconds
    lease = lease_name(name)
    # Unique per attempt: two deliveries of one event must not both hold the lease.
    holder = f"{server}/{uuid.uuid4()}"
    while True:
        record = await _mirrored(ctx, name)
        if record is not None:
            await ctx.advance(
                server,
                ServerStatus.MIRRORING,
                progress=100.0,
                status_message=f"{name} is in the store",
            )
            return ctx.reply(
                STEP,
                event,
                ev.MODEL_AVAILABLE,
                ev.ModelAvailable(request=request, model=model_ref(record)),
            )
        async with ctx.sessions.begin() as session:
            mine = await repo.acquire_lease(session, lease, holder, LEASE_TTL)
        if mine:
            break
        if time.monotonic() > deadline:
            raise RetryLater(f"another download of {name} is still running")
        await ctx.advance(
            server, ServerStatus.MIRRORING, status_message=f"waiting for another download of {name}"
        )
        await asyncio.sleep(WAIT_POLL_SECONDS)
    try:
        record = await _mirror(ctx, event, signed, server, holder)
    finally:
        async with ctx.sessions.begin() as session:
            await repo.release_lease(session, lease, holder)
    return ctx.reply(
        STEP, event, ev.MODEL_AVAILABLE, ev.ModelAvailable(request=request, model=model_ref(record))
    )


async def _mirror(
    ctx: StepContext,
    event: CloudEvent,
    signed: ev.ModelUrlSigned,
    server: uuid.UUID,
    holder: str,
) -> ModelRecord:
    name = signed.request.model
    scratch = ctx.settings.resolved_work_dir / "mirror" / f"{name}.part"

    async def progress(done: int, total: int | None) -> None:
        percent = round(100.0 * done / total, 1) if total else None
        async with ctx.sessions.begin() as session:
            await repo.acquire_lease(session, lease_name(name), holder, LEASE_TTL)
            moved = await transition(
                session,
                server,
                ServerStatus.MIRRORING,
                progress=min(percent, 99.9) if percent is not None else None,
                status_message=f"mirroring {name}: {done} of {total or '?'} bytes",
            )
        if not moved:  # deleted mid-download: stop (the lease is released by our caller)
            raise Superseded(server, ServerStatus.MIRRORING, moved.status)
        if ctx.publish is not None:
            note = ev.make_event(
                ev.MIRROR_PROGRESS,
                ev.MirrorProgress(model=name, bytes_done=done, bytes_total=total),
                source=f"/modelserve/functions/{STEP}",
                subject=server,
                token=ctx.token_for(event),
            )
            try:
                await ctx.publish(note)
            except Exception as exc:  # progress is best effort; the mirror goes on
                log.warning("progress event not delivered: %s", exc)

    first = SignedModel(
        signed.catalog_id,
        signed.url,
        signed.expires_at,
        signed.sha256,
        signed.size_bytes,
        signed.file_type,
    )
    download = Download(name, first, scratch, catalog=ctx.catalog, http=ctx.http, progress=progress)
    try:
        record = await ingest_stream(
            download.chunks(),
            name,
            header=lambda: download.path,
            store=ctx.store,
            sessions=ctx.sessions,
            source=signed.catalog_id,
            expected_size=signed.size_bytes,
            expected_sha256=signed.sha256,
        )
    except DownloadError as exc:
        raise StepFailure(str(exc)) from None
    except IngestError as exc:
        scratch.unlink(missing_ok=True)  # a file that fails a check is never resumed
        raise StepFailure(str(exc)) from None
    scratch.unlink(missing_ok=True)
    # The model stays mirrored for everyone even when this server was deleted meanwhile.
    await ctx.advance(
        server,
        ServerStatus.MIRRORING,
        progress=100.0,
        model_uuid=record.model_uuid,
        status_message=f"mirrored {name} ({record.size_bytes} bytes)",
    )
    return record
