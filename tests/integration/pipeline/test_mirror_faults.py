"""The mirror survives a dropped connection and a signed URL that expires mid-download."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from typing import Any

import pytest
from minio import Minio

from modelserve.functions.ingest import object_key
from modelserve.shared import events as ev
from modelserve.shared.db import repo
from support.catalog_server import CatalogServer
from support.proxy import CuttingProxy

pytestmark = [pytest.mark.postgres, pytest.mark.minio, pytest.mark.e2e]


async def test_expired_url_mid_download_is_refreshed_and_resumed(
    pipeline_factory: Any, minio_server: Any, tiny_gguf: bytes
) -> None:
    # The file passes through a proxy that sends 100 kB, stalls past the URL's
    # one-second life, then drops the connection. The catalog claims an hour, so
    # only the store's 403 can tell the mirror that the URL has expired.
    proxy = await CuttingProxy("127.0.0.1", minio_server.port, cut_after=100_000, stall=1.5).start()
    signer = Minio(
        f"127.0.0.1:{proxy.port}",
        minio_server.access_key,
        minio_server.secret_key,
        secure=False,
        region="us-east-1",
    )
    upstream = "catalog-http"
    if not minio_server.client().bucket_exists(upstream):
        minio_server.client().make_bucket(upstream)
    catalog = CatalogServer(
        signer, upstream, {"flaky": tiny_gguf}, url_lifetime=dt.timedelta(seconds=1)
    ).start()
    try:
        pipe = await pipeline_factory(
            catalog_backend="http",
            catalog_url=catalog.url,
            catalog_file_origins=[f"http://127.0.0.1:{proxy.port}"],
        )
        minio_server.client().put_object(
            upstream, "flaky.gguf", io.BytesIO(tiny_gguf), len(tiny_gguf)
        )
        broker = pipe.broker()
        event = await pipe.request_event("flaky")
        await broker.publish(event)
        async with asyncio.timeout(90):
            await broker.drain()
    finally:
        catalog.stop()
        await proxy.stop()

    assert proxy.cuts == 1
    assert len(catalog.signed) >= 2, "a fresh URL was asked for after the 403"
    ranged = [r for r in proxy.requests if b"range: bytes=" in r.lower()]
    assert ranged, "the download resumed with a Range request"
    assert all(b"bytes=0-" not in r.lower() for r in ranged)
    async with pipe.sessions() as session:
        record = await repo.get_server(session, ev.subject_uuid(event))
    assert record.status == "pending", record.status_message
    assert await pipe.store.read_all(object_key("flaky")) == tiny_gguf


async def test_catalog_url_on_another_host_is_never_fetched(
    pipeline_factory: Any, minio_server: Any, tiny_gguf: bytes
) -> None:
    signer = minio_server.client()
    upstream = "catalog-elsewhere"
    if not signer.bucket_exists(upstream):
        signer.make_bucket(upstream)
    catalog = CatalogServer(
        signer, upstream, {"elsewhere": tiny_gguf}, url_lifetime=dt.timedelta(minutes=5)
    ).start()
    try:
        # The catalog's URLs point at MinIO, which is not among the allowed origins.
        pipe = await pipeline_factory(catalog_backend="http", catalog_url=catalog.url)
        broker = pipe.broker()
        event = await pipe.request_event("elsewhere")
        await broker.publish(event)
        async with asyncio.timeout(60):
            await broker.drain()
    finally:
        catalog.stop()
    (failed,) = [e for e in broker.seen if e["type"] == ev.SERVE_FAILED]
    body = ev.payload(failed, ev.ServeFailed)
    assert body.step == "mirror" and "not an origin of the configured catalog" in body.reason
    assert await pipe.store.list() == []
