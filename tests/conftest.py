"""Session-scoped real servers: Postgres, MinIO, a Kubernetes control plane.

Each starts on 127.0.0.1 on a free port with a temp data dir, once per test
session and only when a test asks for it, and is stopped at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.gguf_synth import write_synthetic_gguf
from support.databases import create_postgres_database, drop_postgres_database, sqlite_url
from support.kube import KubeCluster, start_kube_cluster
from support.minio_server import MinioServer, start_minio
from support.postgres import PostgresServer, start_postgres
from support.services import start_or_skip


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated tiny llama GGUF (about 0.5 MB) that most tests serve or inspect."""
    return write_synthetic_gguf(tmp_path_factory.mktemp("models") / "demo.gguf", "tiny")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_or_skip(start_postgres)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def minio_server() -> Iterator[MinioServer]:
    server = start_or_skip(start_minio)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, controller-manager, scheduler, a kwok node (support/kube.py)."""
    cluster = start_or_skip(start_kube_cluster)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A freshly migrated database on each engine: SQLite file, then real Postgres."""
    server: PostgresServer | None = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        url = await create_postgres_database(server)
    else:
        url = sqlite_url(tmp_path)
    engine = make_engine(url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
    if server is not None:
        await drop_postgres_database(server, url)


@pytest.fixture
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(db_engine)
