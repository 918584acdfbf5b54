"""Session-scoped real servers: Postgres, MinIO, etcd + Kubernetes API server.

Each starts on 127.0.0.1 on a free port with a temp data dir, once per test
session and only when a test asks for it, and is stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.kube import KubeApi, start_kube_api
from support.minio_server import MinioServer, start_minio
from support.postgres import PostgresServer, start_postgres
from support.services import start_or_skip


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
def kube_api() -> Iterator[KubeApi]:
    api = start_or_skip(start_kube_api)
    yield api
    api.stop()
