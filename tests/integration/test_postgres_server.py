"""The real Postgres fixture works end to end over asyncpg."""

from __future__ import annotations

import asyncpg
import pytest

from support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


async def test_table_created_and_queried(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS smoke")
        await conn.execute("CREATE TABLE smoke (id serial PRIMARY KEY, name text NOT NULL)")
        await conn.executemany("INSERT INTO smoke (name) VALUES ($1)", [("a",), ("b",), ("c",)])
        rows = await conn.fetch("SELECT name FROM smoke WHERE name <> $1 ORDER BY id", "b")
        assert [r["name"] for r in rows] == ["a", "c"]
        version = await conn.fetchval("SHOW server_version")
        assert int(version.split(".")[0]) >= 13
    finally:
        await conn.execute("DROP TABLE IF EXISTS smoke")
        await conn.close()


async def test_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()
