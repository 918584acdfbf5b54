"""Pipeline faults: every event delivered twice, then all of them again, newest first.

The pipeline is the integration suite's: real Postgres, real MinIO (store and
upstream bucket), the steps behind functions-framework, the embedded broker with
config/'s Triggers. After the replay an audit finds exactly what one serve
makes: one model record and its object, one server record (still pending), one
ModelServe, each event once in the ledger, no orphan object or record, no
partial object under a final key, an empty scratch space.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from integration.pipeline.conftest import pipeline_factory, tiny_gguf
from modelserve.functions.ingest import object_key
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.db.models import ModelRecord, ProcessedEvent, ServerRecord
from support.reliability import Recorder

__all__ = ["pipeline_factory", "tiny_gguf"]
pytestmark = [pytest.mark.reliability("faults"), pytest.mark.postgres, pytest.mark.minio]


async def audit(pipe: Any) -> dict[str, Any]:
    """What the database, the bucket, the ModelServe folder and the scratch space hold."""
    async with pipe.sessions() as session:
        models = (await session.execute(select(ModelRecord.object_path))).scalars().all()
        servers = (
            await session.execute(select(ServerRecord.server_uuid, ServerRecord.status))
        ).all()
        ledger = (
            await session.execute(select(ProcessedEvent.event_type, ProcessedEvent.event_id))
        ).all()
        counted = await session.scalar(select(func.count()).select_from(ProcessedEvent))
    objects = sorted(o.key for o in await pipe.store.list())
    folder = pipe.settings.data_dir / "modelserves"
    scratch = pipe.settings.resolved_work_dir
    return {
        "model objects": sorted(models),
        "servers": sorted((str(u), s) for u, s in servers),
        "ledger": sorted((t, i) for t, i in ledger),
        "ledger rows": counted,
        "objects": objects,
        "modelserves": sorted(p.name for p in folder.rglob("*.json")),
        "scratch": sorted(str(p) for p in scratch.rglob("*") if p.is_file())
        if scratch.exists()
        else [],
    }


async def test_every_event_twice_then_replayed_out_of_order(
    pipeline_factory: Any, tiny_gguf: bytes, reliability: Recorder, tmp_path: Path
) -> None:
    reliability.case(
        "pipeline: every event twice",
        injected="each event of a serve delivered twice, concurrently",
        checked="one model, one object, one server (pending), one ModelServe, ledger unique",
        outcome="survived",
    )
    reliability.case(
        "pipeline: the whole chain replayed newest first",
        injected="every event seen, redelivered twice in reverse order after the serve",
        checked="the audit is unchanged: no second object, record, ModelServe or download",
        outcome="survived",
    )
    pipe = await pipeline_factory()
    pipe.upload_upstream("replayed", tiny_gguf)
    broker = pipe.broker(duplicate_deliveries=True)
    event = await pipe.request_event("replayed")
    await broker.publish(event)
    async with asyncio.timeout(90):
        await broker.drain()
    assert not broker.dead, broker.dead
    first = await audit(pipe)
    server = str(ev.subject_uuid(event))
    assert first["servers"] == [(server, "pending")]
    assert first["objects"] == [object_key("replayed")] == first["model objects"]
    assert first["modelserves"] == [f"{ms.resource_name(ev.subject_uuid(event))}.json"]
    assert len(first["ledger"]) == len(set(first["ledger"])) == first["ledger rows"]
    assert first["scratch"] == []

    seen = list(broker.seen)
    replay = pipe.broker(duplicate_deliveries=True)
    for old in reversed(seen):
        await replay.publish(old)
    async with asyncio.timeout(90):
        await replay.drain()
    assert not replay.dead, replay.dead
    assert await audit(pipe) == first
    replayed = {e["id"] for e in seen}
    downloads = [
        e for e in replay.seen if e["type"] == ev.MIRROR_PROGRESS and e["id"] not in replayed
    ]
    assert downloads == [], "a replayed event started a second download"
