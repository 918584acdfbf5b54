"""The serve pipeline as it runs on one machine: functions over HTTP, the embedded broker.

Each step is the real functions-framework app for its target, served by a
werkzeug server on a loopback port; the broker reads config/pipeline/'s real
Trigger manifests and delivers to them over HTTP. ``pipeline_factory`` (a fixture,
imported by the conftest of each folder that uses it) wires all of it to real
Postgres and real MinIO (store bucket + upstream bucket).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from werkzeug.serving import BaseWSGIServer

from modelserve.functions import host
from modelserve.functions.broker import triggers
from modelserve.functions.broker.broker import EmbeddedBroker
from modelserve.functions.broker.ingress import make_ingress
from modelserve.functions.context_factory import build_context
from modelserve.functions.serve_request import open_serve
from modelserve.shared import events as ev
from modelserve.shared import modelserve as ms
from modelserve.shared.auth.tokens import TokenIssuer
from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.net import free_port
from modelserve.shared.settings import Settings, load_settings
from modelserve.shared.store.minio_store import MinioStore, make_minio_client
from support.databases import create_postgres_database, drop_postgres_database
from support.minio_server import MinioServer
from support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Functions:
    urls: dict[str, str]
    servers: list[BaseWSGIServer]


@contextmanager
def running_functions(settings: Settings) -> Iterator[Functions]:
    """Every pipeline function, served on its own loopback port for this settings."""
    host.start(lambda: build_context(settings))
    servers: list[BaseWSGIServer] = []
    try:
        urls, servers = host.serve_functions()
        yield Functions(urls, servers)
    finally:
        for server in servers:
            server.shutdown()
        host.stop()


def make_broker(functions: Functions, http: httpx.AsyncClient, **options: object) -> EmbeddedBroker:
    rules = triggers.pipeline_rules(ROOT / "config")
    return EmbeddedBroker(rules, lambda name: functions.urls[name], http, **options)  # type: ignore[arg-type]


@dataclass
class Pipeline:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    store: MinioStore
    upstream_bucket: str
    minio: MinioServer
    issuer: TokenIssuer
    functions: Functions
    http: httpx.AsyncClient
    active: list[EmbeddedBroker]

    def broker(self, **options: Any) -> EmbeddedBroker:
        """A fresh broker; the ingress (MODELSERVE_BROKER_URL) now feeds this one."""
        broker = make_broker(self.functions, self.http, **options)
        self.active[:] = [broker]
        return broker

    async def request_event(
        self, model: str, server: uuid.UUID | None = None, **fields: Any
    ) -> Any:
        """A serve.requested event and its server record, as ``POST /serve`` makes them."""
        server = server or uuid.uuid4()
        request = ev.ServeRequest(
            model=model, requested_by="alice", role=fields.pop("role", "operator"), **fields
        )
        return await open_serve(
            self.sessions,
            self.issuer,
            server=server,
            request=request,
            gateway_url=ms.gateway_url(self.settings.public_base_url, server),
            source="/tests",
        )

    def upload_upstream(self, name: str, data: bytes, sha256: str | None = "auto") -> None:
        client = self.minio.client()
        metadata: dict[str, str | list[str] | tuple[str]] = {}
        if sha256 == "auto":
            metadata["sha256"] = hashlib.sha256(data).hexdigest()
        elif sha256 is not None:
            metadata["sha256"] = sha256
        client.put_object(
            self.upstream_bucket, f"{name}.gguf", io.BytesIO(data), len(data), metadata=metadata
        )


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


def pipeline_settings(
    tmp: Path, db_url: str, minio: MinioServer, store_bucket: str, upstream: str, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "mode": "local",
        "data_dir": tmp,
        "database_url": db_url,
        "jwt_secret": secrets.token_hex(24),
        "store_backend": "minio",
        "minio_endpoint": minio.endpoint,
        "minio_access_key": minio.access_key,
        "minio_secret_key": minio.secret_key,
        "bucket": store_bucket,
        "catalog_backend": "s3",
        "catalog_url": minio.url,
        "catalog_access_key": minio.access_key,
        "catalog_secret_key": minio.secret_key,
        "catalog_bucket": upstream,
    }
    return load_settings(**(values | extra))


PipelineFactory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def pipeline_factory(
    postgres_server: PostgresServer, minio_server: MinioServer, tmp_path: Path
) -> AsyncIterator[Any]:
    """Build a running pipeline; extra settings can be passed per test."""
    cleanups: list[Any] = []
    active: list[EmbeddedBroker] = []

    async def publish(event: Any) -> None:
        await active[0].publish(event)

    ingress = uvicorn.Server(
        uvicorn.Config(
            make_ingress(publish), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    serving = asyncio.create_task(ingress.serve())
    while not ingress.started:  # noqa: ASYNC110 - uvicorn only exposes a flag
        await asyncio.sleep(0.01)
    broker_url = f"http://127.0.0.1:{ingress.config.port}/"

    async def build(**extra: Any) -> Pipeline:
        db_url = await create_postgres_database(postgres_server)
        engine = make_engine(db_url)
        await upgrade(engine)
        store_bucket, upstream = f"store-{uuid.uuid4().hex[:10]}", f"up-{uuid.uuid4().hex[:10]}"
        minio_server.client().make_bucket(upstream)
        settings = pipeline_settings(
            tmp_path, db_url, minio_server, store_bucket, upstream, broker_url=broker_url, **extra
        )
        store = MinioStore(
            make_minio_client(
                minio_server.endpoint,
                minio_server.access_key,
                minio_server.secret_key,
                secure=False,
            ),
            store_bucket,
        )
        functions_cm = running_functions(settings)
        functions = functions_cm.__enter__()
        http = httpx.AsyncClient(timeout=60)
        cleanups.append((functions_cm, engine, http, db_url))
        return Pipeline(
            settings,
            make_sessionmaker(engine),
            store,
            upstream,
            minio_server,
            TokenIssuer.from_settings(settings),
            functions,
            http,
            active,
        )

    yield build
    for functions_cm, engine, http, db_url in cleanups:
        functions_cm.__exit__(None, None, None)
        await http.aclose()
        await engine.dispose()
        await drop_postgres_database(postgres_server, db_url)
    ingress.should_exit = True
    await serving
