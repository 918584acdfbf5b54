"""The whole chain on the embedded broker with real Postgres and real MinIO."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from sqlalchemy import func, select

from modelserve.functions.appliers import LocalApplier
from modelserve.functions.ingest import model_uuid, object_key
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.db import repo
from modelserve.shared.db.models import ModelRecord, ProcessedEvent, ServerRecord

pytestmark = [pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]


def types(events: list[CloudEvent]) -> list[str]:
    return [e["type"].removeprefix(ev.TYPE_PREFIX) for e in events]


async def test_missing_model_is_mirrored_approved_and_applied(
    pipeline_factory: Any, tiny_gguf: bytes
) -> None:
    pipe = await pipeline_factory()
    pipe.upload_upstream("demo", tiny_gguf)
    broker = pipe.broker()
    event = await pipe.request_event("demo", runtime_params={"n_ctx": 512})
    server = ev.subject_uuid(event)
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()

    assert [t for t in types(broker.seen) if t != "mirror.progress"] == [
        "serve.requested",
        "model.missing",
        "model.url-signed",
        "model.available",
        "contract.approved",
        "server.applied",
    ]
    assert not broker.dead
    async with pipe.sessions() as session:
        record = await repo.get_server(session, server)
        model = await repo.get_model_by_name(session, "demo")
    assert record.status == "pending", record.status_message
    assert record.progress == 100.0
    assert record.gateway_url and record.gateway_url.endswith(str(server))
    assert model is not None and model.model_uuid == model_uuid("demo")
    assert model.size_bytes == len(tiny_gguf) and model.gguf and model.gguf["block_count"] == 2
    stored = await pipe.store.read_all(object_key("demo"))
    assert stored == tiny_gguf
    resource = LocalApplier(pipe.settings.data_dir / "modelserves").read(
        "modelserve", ms.resource_name(server)
    )
    assert resource is not None
    spec = ms.spec_of(resource)
    assert spec.storage_uri == f"s3://{pipe.store.bucket}/{object_key('demo')}"
    assert spec.sha256 == model.sha256 and spec.runtime.n_ctx == 512
    assert resource["metadata"]["annotations"][ms.AUTH_ANNOTATION]

    # The same model again: no second download, straight to available.
    again = pipe.broker()
    second = await pipe.request_event("demo")
    await again.publish(second)
    async with asyncio.timeout(60):
        await again.drain()
    assert types(again.seen) == [
        "serve.requested",
        "model.available",
        "contract.approved",
        "server.applied",
    ]


async def test_every_event_delivered_twice_changes_nothing(
    pipeline_factory: Any, tiny_gguf: bytes
) -> None:
    pipe = await pipeline_factory()
    pipe.upload_upstream("twice", tiny_gguf)
    broker = pipe.broker(duplicate_deliveries=True)
    event = await pipe.request_event("twice")
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()
    assert not broker.dead
    async with pipe.sessions() as session:
        models = await session.scalar(select(func.count()).select_from(ModelRecord))
        servers = await session.scalar(select(func.count()).select_from(ServerRecord))
        ledger = (await session.execute(select(ProcessedEvent.event_type))).scalars().all()
        record = await repo.get_server(session, ev.subject_uuid(event))
    assert (models, servers, record.status) == (1, 1, "pending"), record.status_message
    # Each step recorded each distinct event once, however often it arrived.
    assert sorted(ledger) == sorted(set(ledger))
    assert [o.key for o in await pipe.store.list()] == [object_key("twice")]
    folder = pipe.settings.data_dir / "modelserves" / "modelserve"
    assert [p.name for p in folder.glob("*.json")] == [
        f"{ms.resource_name(ev.subject_uuid(event))}.json"
    ]
    # The chain's last event came out (a duplicate superseded by its twin once
    # swallowed it), and replies to duplicates carry the same id: one distinct reply.
    # A twin still in flight is acked without one, so how many copies came varies.
    ids = [e["id"] for e in broker.seen if e["type"] == ev.SERVER_APPLIED]
    assert ids and len(set(ids)) == 1


async def test_two_requests_for_one_missing_model_download_once(
    pipeline_factory: Any, tiny_gguf: bytes
) -> None:
    pipe = await pipeline_factory()
    pipe.upload_upstream("shared", tiny_gguf)
    broker = pipe.broker()
    first, second = await pipe.request_event("shared"), await pipe.request_event("shared")
    await asyncio.gather(broker.publish(first), broker.publish(second))
    async with asyncio.timeout(60):
        await broker.drain()
    async with pipe.sessions() as session:
        for event in (first, second):
            assert (await repo.get_server(session, ev.subject_uuid(event))).status == "pending"
    progress = [e for e in broker.seen if e["type"] == ev.MIRROR_PROGRESS]
    downloaders = {e["subject"] for e in progress}
    assert len(downloaders) == 1, " ".join(e["type"][15:] for e in broker.seen)


@pytest.mark.parametrize(
    ("data", "sha", "reason"),
    [
        (b"<html>not found</html>" * 50, "auto", "is not a usable GGUF"),
        (None, "0" * 64, "sha256 mismatch"),
    ],
    ids=["corrupt-gguf", "sha256-mismatch"],
)
async def test_bad_upstream_file_fails_and_leaves_nothing(
    pipeline_factory: Any, tiny_gguf: bytes, data: bytes | None, sha: str, reason: str
) -> None:
    pipe = await pipeline_factory()
    pipe.upload_upstream("bad", data or tiny_gguf, sha256=sha)
    broker = pipe.broker()
    event = await pipe.request_event("bad")
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()
    failed = [e for e in broker.seen if e["type"] == ev.SERVE_FAILED]
    assert len(failed) == 1
    body = ev.payload(failed[0], ev.ServeFailed)
    assert body.step == "mirror" and reason in body.reason
    async with pipe.sessions() as session:
        record = await repo.get_server(session, ev.subject_uuid(event))
        assert record.status == "failed" and reason in (record.status_message or "")
        assert await repo.get_model_by_name(session, "bad") is None
    assert await pipe.store.list() == []
    assert not list((pipe.settings.resolved_work_dir / "mirror").glob("bad*"))


async def test_contract_violation_lists_every_reason(
    pipeline_factory: Any, tiny_gguf: bytes, tmp_path: Path
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        json.dumps(
            {
                "allowed_namespaces": ["prod"],
                "limits": {"max_replicas": 1, "max_context_length": 1024, "max_cpu_per_replica": 1},
            }
        )
    )
    pipe = await pipeline_factory(contract_file=contract)
    pipe.upload_upstream("big", tiny_gguf)
    broker = pipe.broker()
    event = await pipe.request_event(
        "big", replicas=3, cpu="2", namespace="dev", runtime_params={"n_ctx": 4096}
    )
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()
    (failed,) = [e for e in broker.seen if e["type"] == ev.SERVE_FAILED]
    body = ev.payload(failed, ev.ServeFailed)
    assert body.step == "contract"
    assert [v.split(":")[0] for v in body.violations] == [
        "namespace",
        "replicas",
        "cpu",
        "context_length",
        "context_length",
    ]
    async with pipe.sessions() as session:
        record = await repo.get_server(session, ev.subject_uuid(event))
    assert record.status == "failed"
    for field in ("namespace", "replicas", "cpu", "context_length"):
        assert field in (record.status_message or "")
    assert record.violations == body.violations  # kept one by one for the dashboard


async def test_unknown_model_fails_at_the_catalog(pipeline_factory: Any) -> None:
    pipe = await pipeline_factory()
    broker = pipe.broker()
    event = await pipe.request_event("nonexistent")
    await broker.publish(event)
    async with asyncio.timeout(60):
        await broker.drain()
    (failed,) = [e for e in broker.seen if e["type"] == ev.SERVE_FAILED]
    body = ev.payload(failed, ev.ServeFailed)
    assert body.step == "signed-url" and "not in bucket" in body.reason
