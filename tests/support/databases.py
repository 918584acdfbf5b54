"""A fresh, migrated database per test on either engine: SQLite file or real Postgres."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from support.postgres import PostgresServer


async def create_postgres_database(server: PostgresServer) -> str:
    """CREATE DATABASE with a unique name; returns its SQLAlchemy async URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.sqlalchemy_url(name)


async def drop_postgres_database(server: PostgresServer, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'modelserve.db'}"
