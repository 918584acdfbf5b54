"""Pipeline faults: MinIO stopped mid-mirror, Postgres restarted under three serves, every
event twice and then the whole chain replayed newest first.

The pipeline is the integration suite's: real Postgres, real MinIO (store and
upstream bucket), the steps behind functions-framework, the embedded broker with
config/'s Triggers. After the replay an audit finds exactly what one serve
makes: one model record and its object, one server record (still pending), one
ModelServe, each event once in the ledger, no orphan object or record, no
partial object under a final key, an empty scratch space.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from sqlalchemy import func, select

from integration.pipeline.conftest import pipeline_factory, tiny_gguf
from modelserve.functions.ingest import object_key
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.db.models import ModelRecord, ProcessedEvent, ServerRecord
from support.catalog_server import CatalogServer
from support.minio_server import MinioServer
from support.postgres import PostgresServer
from support.proxy import CuttingProxy
from support.reliability import Recorder

__all__ = ["pipeline_factory", "tiny_gguf"]
pytestmark = pytest.mark.reliability("faults")


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


async def test_minio_stopped_mid_mirror_and_restarted(
    pipeline_factory: Any, minio_server: MinioServer, tiny_gguf: bytes, reliability: Recorder
) -> None:
    """The download runs through a proxy that stalls after 100 kB; meanwhile MinIO (the
    upstream bucket and the store) goes down for a few seconds. The mirror retries,
    resumes with a Range request once MinIO is back, and stores the model once."""
    reliability.case(
        "pipeline: MinIO stopped mid-mirror, then restarted",
        injected="MinIO (upstream and store) stopped 100 kB into a download, back 3 s later",
        checked="the serve reaches pending; one object, byte-identical; no partial object",
        outcome="survived",
    )
    proxy = await CuttingProxy("127.0.0.1", minio_server.port, cut_after=100_000, stall=2.0).start()
    signer = Minio(
        f"127.0.0.1:{proxy.port}",
        minio_server.access_key,
        minio_server.secret_key,
        secure=False,
        region="us-east-1",
    )
    upstream = "catalog-outage"
    if not minio_server.client().bucket_exists(upstream):
        minio_server.client().make_bucket(upstream)
    minio_server.client().put_object(upstream, "outage.gguf", io.BytesIO(tiny_gguf), len(tiny_gguf))
    catalog = CatalogServer(
        signer, upstream, {"outage": tiny_gguf}, url_lifetime=dt.timedelta(minutes=10)
    ).start()
    try:
        pipe = await pipeline_factory(
            catalog_backend="http",
            catalog_url=catalog.url,
            catalog_file_origins=[f"http://127.0.0.1:{proxy.port}"],
        )
        broker = pipe.broker()
        event = await pipe.request_event("outage")
        await broker.publish(event)
        async with asyncio.timeout(30):
            while not proxy.requests:  # noqa: ASYNC110 - the proxy only keeps a list
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # inside the stall, 100 kB in
        await asyncio.to_thread(minio_server.halt)
        await asyncio.sleep(3)
        await asyncio.to_thread(minio_server.resume)
        async with asyncio.timeout(120):
            await broker.drain()
    finally:
        catalog.stop()
        await proxy.stop()
        if not minio_server.ready():
            await asyncio.to_thread(minio_server.resume)
    assert not broker.dead, broker.dead
    state = await audit(pipe)
    assert state["servers"] == [(str(ev.subject_uuid(event)), "pending")], state
    assert state["objects"] == [object_key("outage")] == state["model objects"]
    assert await pipe.store.read_all(object_key("outage")) == tiny_gguf
    assert state["scratch"] == []
    ranged = [r for r in proxy.requests if b"range: bytes=" in r.lower()]
    assert ranged, "the download resumed with a Range request"


async def test_postgres_restarted_while_three_serves_run(
    pipeline_factory: Any,
    postgres_server: PostgresServer,
    tiny_gguf: bytes,
    reliability: Recorder,
) -> None:
    reliability.case(
        "pipeline: Postgres restarted under three serves",
        injected="Postgres stopped for 3 s just after three serves were published",
        checked="all three reach pending; 3 models, 3 objects, ledger unique; no dead letter",
        outcome="survived",
    )
    pipe = await pipeline_factory()
    names = ["pg-one", "pg-two", "pg-three"]
    for name in names:
        pipe.upload_upstream(name, tiny_gguf)
    broker = pipe.broker()
    events = [await pipe.request_event(name) for name in names]
    for event in events:
        await broker.publish(event)
    await asyncio.sleep(0.2)
    async with pipe.sessions() as session:  # the fault lands mid-work, not after it
        done = await session.scalar(
            select(func.count()).select_from(ServerRecord).where(ServerRecord.status == "pending")
        )
    assert done is not None and done < 3
    await asyncio.to_thread(postgres_server.halt)
    try:
        await asyncio.sleep(3)
    finally:
        await asyncio.to_thread(postgres_server.resume)
    async with asyncio.timeout(120):
        await broker.drain()
    assert not broker.dead, [(d.trigger, d.code, d.reason[:200]) for d in broker.dead]
    state = await audit(pipe)
    assert sorted(s for _, s in state["servers"]) == ["pending"] * 3, state["servers"]
    assert state["objects"] == sorted(object_key(n) for n in names) == state["model objects"]
    assert len(state["ledger"]) == len(set(state["ledger"]))
    assert state["scratch"] == []
