"""Data model + repository on both engines: SQLite and the real Postgres server."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from modelserve.shared import events as ev
from modelserve.shared.db import repo
from modelserve.shared.db.migrate import downgrade, upgrade
from modelserve.shared.db.models import Base, ModelRecord, Role
from support.records import new_server

Sessions = async_sessionmaker[AsyncSession]


def model_fields(name: str = "demo", model_uuid: uuid.UUID | None = None) -> dict[str, object]:
    return {
        "model_uuid": model_uuid or uuid.uuid4(),
        "model_name": name,
        "object_path": f"models/{name}.gguf",
        "sha256": "a" * 64,
        "size_bytes": 5_000_000_000,  # beyond 32 bits on purpose
        "architecture": "llama",
        "file_type": "Q4_K_M",
        "parameter_count": 7_000_000_000,
        "context_length": 4096,
        "source": "catalog://demo",
    }


async def test_migrations_match_the_models(db_engine: AsyncEngine) -> None:
    def diff(conn: object) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))  # type: ignore[arg-type]

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_and_upgrade_again(db_engine: AsyncEngine) -> None:
    await downgrade(db_engine, "base")
    async with db_engine.connect() as conn:
        tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    assert "server_records" not in tables
    await upgrade(db_engine)
    async with db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM server_records"))).scalar() == 0


async def test_model_create_or_get_is_idempotent(sessions: Sessions) -> None:
    fields = model_fields()
    async with sessions.begin() as session:
        first, created = await repo.get_or_create_model(session, **fields)  # type: ignore[arg-type]
    async with sessions.begin() as session:
        again, created_again = await repo.get_or_create_model(session, **fields)  # type: ignore[arg-type]
        count = await session.scalar(select(func.count()).select_from(ModelRecord))
    assert (created, created_again, count) == (True, False, 1)
    assert again.size_bytes == 5_000_000_000
    assert again.created_at.tzinfo is not None
    assert again.created_at == first.created_at


async def test_model_name_taken_by_another_uuid_is_a_conflict(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await repo.get_or_create_model(session, **model_fields("taken"))  # type: ignore[arg-type]
    async with sessions.begin() as session:
        with pytest.raises(repo.Conflict, match="'taken' already belongs"):
            await repo.get_or_create_model(session, **model_fields("taken"))  # type: ignore[arg-type]


async def test_update_server_sets_fields_but_never_the_status(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        server_uuid = await new_server(session)
        record = await repo.get_server(session, server_uuid)
        created_at, updated_at = record.created_at, record.updated_at
    started = dt.datetime.now(dt.UTC)
    async with sessions.begin() as session:
        updated = await repo.update_server(
            session, server_uuid, progress=42.5, started_at=started, pod_names=["p-1", "p-2"]
        )
    assert updated.status == "requested"
    assert updated.progress == 42.5
    assert updated.pod_names == ["p-1", "p-2"]
    assert updated.created_at == created_at
    assert updated.updated_at >= updated_at
    assert updated.started_at is not None
    assert abs((updated.started_at - started).total_seconds()) < 1e-3
    async with sessions.begin() as session:
        with pytest.raises(ValueError, match="not settable here: status"):
            await repo.update_server(session, server_uuid, status="ready")
        with pytest.raises(ValueError, match="not settable here: colour"):
            await repo.update_server(session, server_uuid, colour="red")
    with pytest.raises(repo.NotFound):
        async with sessions.begin() as session:
            await repo.update_server(session, uuid.uuid4(), progress=1.0)
    # The database itself refuses what slips past Python.
    for statement in (
        "UPDATE server_records SET status = 'exploded'",
        "UPDATE server_records SET progress = 101",
    ):
        with pytest.raises(IntegrityError):
            async with sessions.begin() as session:
                await session.execute(text(statement))


async def test_user_creation_never_overwrites(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        _, created = await repo.create_user(session, "alice", "hash-1", Role.ADMIN)
        user, created_again = await repo.create_user(session, "alice", "hash-2", Role.VIEWER)
    assert (created, created_again) == (True, False)
    assert (user.password_hash, user.role) == ("hash-1", "admin")
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            await session.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, created_at) "
                    "VALUES ('bob', 'h', 'emperor', CURRENT_TIMESTAMP)"
                )
            )


async def test_event_ledger_dedupes_and_rolls_back(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        assert await repo.mark_event_processed(session, "src", "id-1", "serve.requested", "s1")
    async with sessions.begin() as session:
        assert not await repo.mark_event_processed(session, "src", "id-1", "serve.requested")
        # Same id from another source is another event.
        assert await repo.mark_event_processed(session, "other", "id-1", "serve.requested")

    class StepFailed(Exception):
        pass

    with pytest.raises(StepFailed):
        async with sessions.begin() as session:
            assert await repo.mark_event_processed(session, "src", "id-2", "model.available")
            raise StepFailed
    async with sessions() as session:
        assert not await repo.is_event_processed(session, "src", "id-2")
        assert await repo.is_event_processed(session, "src", "id-1")


async def test_first_delivery_of_an_event(sessions: Sessions) -> None:
    server = uuid.uuid4()
    request = ev.ServeRequest(model="demo", requested_by="alice", role="operator")
    event = ev.make_event(
        ev.SERVE_REQUESTED, ev.ServeRequested(request=request), source="/api", subject=server
    )
    async with sessions.begin() as session:
        assert await ev.first_delivery(session, event)
    async with sessions.begin() as session:
        assert not await ev.first_delivery(session, event)


async def test_ledger_keeps_the_reply(sessions: Sessions) -> None:
    reply = {"specversion": "1.0", "id": "r-1", "type": "t", "source": "s"}
    async with sessions.begin() as session:
        assert await repo.mark_event_processed(session, "src", "e-9", "t", reply=reply)
    async with sessions() as session:
        entry = await repo.processed_event(session, "src", "e-9")
        assert entry is not None and entry.reply == reply
        assert await repo.processed_event(session, "src", "e-10") is None


async def test_leases_have_one_holder_until_expiry(sessions: Sessions) -> None:
    ttl = dt.timedelta(minutes=5)
    async with sessions.begin() as session:
        assert await repo.acquire_lease(session, "download:demo", "a", ttl)
        assert not await repo.acquire_lease(session, "download:demo", "b", ttl)
        assert await repo.acquire_lease(session, "download:demo", "a", ttl)  # renewal
        assert await repo.acquire_lease(session, "download:other", "b", ttl)
    async with sessions.begin() as session:
        await repo.release_lease(session, "download:demo", "b")  # not b's: no effect
        assert not await repo.acquire_lease(session, "download:demo", "b", ttl)
        await repo.release_lease(session, "download:demo", "a")
        assert await repo.acquire_lease(session, "download:demo", "b", ttl)
    async with sessions.begin() as session:  # an expired lease can be taken over
        assert await repo.acquire_lease(session, "stale", "a", dt.timedelta(seconds=-1))
        assert await repo.acquire_lease(session, "stale", "b", ttl)
