"""The images as ``make images`` builds them, once per test session.

Building needs a docker daemon: without one the image tests skip on a laptop and
fail in CI (MODELSERVE_REQUIRE_SERVICES=1; ``.ci/run`` installs docker.io and
starts dockerd). Docker's layer cache makes a session whose sources did not
change cost seconds.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelserve.shared.db.engine import make_engine, make_sessionmaker
from modelserve.shared.db.migrate import upgrade
from modelserve.shared.settings import load_settings
from support.containers import Platform, build_images, secret_keys
from support.databases import create_postgres_database, drop_postgres_database
from support.minio_server import MinioServer
from support.postgres import PostgresServer
from support.services import start_or_skip

NAMESPACE = "modelserve"  # config/namespace.yaml


@pytest.fixture(scope="session")
def images() -> Path:
    """Build (or find up to date) every image; the log of ``make images``."""
    return start_or_skip(build_images)


@pytest.fixture
async def platform(
    postgres_server: PostgresServer, minio_server: MinioServer
) -> AsyncIterator[Platform]:
    """A fresh Postgres database, MinIO buckets and every key of the Secret filled in."""
    db_url = await create_postgres_database(postgres_server)
    suffix = uuid.uuid4().hex[:10]
    store, catalog = f"store-{suffix}", f"catalog-{suffix}"
    for bucket in (store, catalog):
        minio_server.client().make_bucket(bucket)
    values = {
        "database_url": db_url,
        "jwt_secret": secrets.token_hex(32),
        "metrics_token": secrets.token_hex(32),
        "admin_username": "admin",
        "admin_password": secrets.token_urlsafe(16),
        "public_base_url": "https://models.example.test",
        "namespace": NAMESPACE,
        "store_backend": "minio",
        "minio_endpoint": minio_server.endpoint,
        "minio_access_key": minio_server.access_key,
        "minio_secret_key": minio_server.secret_key,
        "minio_secure": "false",
        "bucket": store,
        "catalog_backend": "s3",
        "catalog_url": minio_server.url,
        "catalog_bucket": catalog,
        "catalog_access_key": minio_server.access_key,
        "catalog_secret_key": minio_server.secret_key,
    }
    env = {f"MODELSERVE_{key.upper()}": value for key, value in values.items()}
    assert sorted(env) == sorted(secret_keys()), "the Secret's keys changed: follow them here"
    settings = load_settings(mode="kubernetes", **values)
    engine = make_engine(db_url)
    await upgrade(engine)
    try:
        yield Platform(env, settings, make_sessionmaker(engine))
    finally:
        await engine.dispose()
        await drop_postgres_database(postgres_server, db_url)
