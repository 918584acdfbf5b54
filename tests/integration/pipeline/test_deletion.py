"""Deleting a server at every point of its pipeline, and events that come late.

Real Postgres and MinIO; the steps are the real functions over HTTP, delivered
one event at a time so the delete lands exactly between two of them; the delete
is the API's own ``DELETE /servers/{uuid}``. Each case ends with the record
``deleted``, no ModelServe, and the mirrored model still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from modelserve.functions.appliers import Applier, LocalApplier
from modelserve.functions.context_factory import build_context
from modelserve.functions.ingest import object_key
from modelserve.functions.steps import apply
from modelserve.functions.steps.runner import run_step
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from support.api_client import Api, in_process_api

pytestmark = [pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]

CHAIN = {  # event type -> the function that handles it
    ev.SERVE_REQUESTED: "modelserve-availability",
    ev.MODEL_MISSING: "modelserve-signed-url",
    ev.MODEL_URL_SIGNED: "modelserve-mirror",
    ev.MODEL_AVAILABLE: "modelserve-contract",
    ev.CONTRACT_APPROVED: "modelserve-apply",
}


@pytest.fixture
async def api_of() -> AsyncIterator[Any]:
    """The API of a pipeline: its DELETE on the pipeline's database and ModelServes."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(pipe: Any) -> Api:
            applier = LocalApplier(pipe.settings.data_dir / "modelserves")
            return await stack.enter_async_context(
                in_process_api(pipe.settings, pipe.sessions, applier, pipe.store)
            )

        yield build


async def deliver(pipe: Any, event: CloudEvent) -> CloudEvent | None:
    """Post one event to its function, as the broker would; the reply, if any."""
    headers, body = ev.encode_binary(event)
    response = await pipe.http.post(
        pipe.functions.urls[CHAIN[event["type"]]], headers=headers, content=body
    )
    assert response.status_code in (200, 202), response.text
    if response.status_code == 202:
        return None
    return ev.decode(dict(response.headers), response.content)


async def run_until(pipe: Any, event: CloudEvent, stop_before: str) -> CloudEvent:
    """Deliver the chain from ``event`` on; the event of type ``stop_before``, undelivered."""
    while event["type"] != stop_before:
        reply = await deliver(pipe, event)
        assert reply is not None, f"the chain ended at {event['type']}"
        event = reply
    return event


def modelserve_of(pipe: Any, server: uuid.UUID) -> dict[str, Any] | None:
    return LocalApplier(pipe.settings.data_dir / "modelserves").read(
        pipe.settings.namespace, ms.resource_name(server)
    )


async def record(pipe: Any, server: uuid.UUID) -> Any:
    async with pipe.sessions() as session:
        return await repo.get_server(session, server, fresh=True)


@pytest.mark.parametrize(
    ("stop_before", "status"),
    [
        (ev.SERVE_REQUESTED, "requested"),
        (ev.MODEL_URL_SIGNED, "mirroring"),
        (ev.CONTRACT_APPROVED, "validating"),
    ],
)
async def test_delete_mid_pipeline_stops_it(
    pipeline_factory: Any, api_of: Any, tiny_gguf: bytes, stop_before: str, status: str
) -> None:
    pipe = await pipeline_factory()
    pipe.broker()  # takes the mirror's progress events
    api = await api_of(pipe)
    pipe.upload_upstream("demo", tiny_gguf)
    first = await pipe.request_event("demo")
    server = ev.subject_uuid(first)
    pending = await run_until(pipe, first, stop_before)
    assert (await record(pipe, server)).status == status

    body = await api.delete(server)
    assert body["status"] == "deleted", body  # nothing was applied: done at once

    # The rest of the chain finds the server gone: acked, no reply, nothing written.
    assert await deliver(pipe, pending) is None
    final = await record(pipe, server)
    assert final.status == "deleted", final.status_message
    assert modelserve_of(pipe, server) is None


async def test_delete_while_applying_takes_the_modelserve_back(
    pipeline_factory: Any, api_of: Any, tiny_gguf: bytes
) -> None:
    """The delete lands after the apply step moved to ``applying`` and before it wrote
    the ModelServe: the step writes it, finds the server deleted, and removes it."""
    pipe = await pipeline_factory()
    pipe.broker()  # takes the mirror's progress events
    api = await api_of(pipe)
    pipe.upload_upstream("demo", tiny_gguf)
    approved = await run_until(pipe, await pipe.request_event("demo"), ev.CONTRACT_APPROVED)
    server = ev.subject_uuid(approved)
    ctx = build_context(pipe.settings)
    real = ctx.applier
    written: list[str] = []

    class DeletedMeanwhile(Applier):
        async def apply(self, manifest: dict[str, Any]) -> tuple[str, bool]:
            assert (await record(pipe, server)).status == "applying"
            assert (await api.delete(server))["status"] == "deleted"
            resource, created = await real.apply(manifest)
            written.append(resource)
            assert modelserve_of(pipe, server) is not None
            return resource, created

        async def delete(self, namespace: str, name: str) -> bool:
            return await real.delete(namespace, name)

    ctx = dataclasses.replace(ctx, applier=DeletedMeanwhile())
    outcome = await run_step("apply", apply.handle, approved, ctx)
    await ctx.http.aclose()
    assert (outcome.status, outcome.reply) == (202, None)
    assert written  # the race really happened
    assert modelserve_of(pipe, server) is None
    assert (await record(pipe, server)).status == "deleted"
    # The model stays mirrored for the next request.
    assert await pipe.store.read_all(object_key("demo")) == tiny_gguf


async def test_a_duplicate_superseded_by_its_twin_does_not_swallow_the_reply(
    pipeline_factory: Any, tiny_gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries of one ``contract.approved`` at once. The first applies and
    moves the server to ``pending``; before it writes its answer in the ledger, the
    second finds the server already ``pending`` and stops. That second delivery once
    wrote "no reply" as the event's answer, the first then found the ledger taken and
    answered the same, and the chain's last event, ``server.applied``, was lost (13 to
    16 serves in 30 in the pipeline benchmark with every event delivered twice)."""
    pipe = await pipeline_factory()
    pipe.broker()  # takes the mirror's progress events
    pipe.upload_upstream("demo", tiny_gguf)
    approved = await run_until(pipe, await pipe.request_event("demo"), ev.CONTRACT_APPROVED)
    server = ev.subject_uuid(approved)
    ctx = build_context(pipe.settings)
    reached, go = asyncio.Event(), asyncio.Event()
    mark = repo.mark_event_processed

    async def held(*args: Any, **kwargs: Any) -> bool:  # the first delivery pauses here
        if asyncio.current_task() is first:
            reached.set()
            await go.wait()
        return await mark(*args, **kwargs)

    monkeypatch.setattr(repo, "mark_event_processed", held)
    first = asyncio.create_task(run_step("apply", apply.handle, approved, ctx))
    async with asyncio.timeout(30):
        await reached.wait()
    assert (await record(pipe, server)).status == "pending"
    twin = await run_step("apply", apply.handle, approved, ctx)
    assert (twin.status, twin.reply) == (202, None)  # superseded by the delivery in flight
    go.set()
    applied = await first
    assert applied.reply is not None and applied.reply["type"] == ev.SERVER_APPLIED
    # A later delivery is answered from the ledger with the same reply.
    again = await run_step("apply", apply.handle, approved, ctx)
    await ctx.http.aclose()
    assert again.duplicate and again.reply is not None
    assert again.reply["id"] == applied.reply["id"]


async def test_late_and_repeated_events_never_move_a_server_back(
    pipeline_factory: Any, tiny_gguf: bytes
) -> None:
    pipe = await pipeline_factory()
    pipe.broker()  # takes the mirror's progress events
    pipe.upload_upstream("demo", tiny_gguf)
    first = await pipe.request_event("demo")
    server = ev.subject_uuid(first)
    seen: list[CloudEvent] = []
    event: CloudEvent | None = first
    while event is not None and event["type"] in CHAIN:
        seen.append(event)
        event = await deliver(pipe, event)
    assert (await record(pipe, server)).status == "pending"
    assert modelserve_of(pipe, server) is not None

    # The same events again (at-least-once delivery): the ledger answers as before.
    for old in seen:
        await deliver(pipe, old)
    # The same events under new ids (a producer that resent them): refused, acked.
    for old in seen:
        again = CloudEvent(dict(old.get_attributes()) | {"id": str(uuid.uuid4())}, old.data)
        assert await deliver(pipe, again) is None, old["type"]
    final = await record(pipe, server)
    assert final.status == "pending", final.status_message
