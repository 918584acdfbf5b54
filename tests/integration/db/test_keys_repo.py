"""API key and user-disable queries on both engines."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.auth import apikeys
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role
from support.records import new_server

Sessions = async_sessionmaker[AsyncSession]


async def add_key(session: AsyncSession, owner: str, **fields: object) -> str:
    made = apikeys.new_key()
    await repo.create_api_key(
        session,
        key_id=made.key_id,
        secret_hash=made.secret_hash,
        name="k",
        owner=owner,
        server_uuid=fields.get("server_uuid"),  # type: ignore[arg-type]
        expires_at=fields.get("expires_at"),  # type: ignore[arg-type]
    )
    return made.key_id


async def test_keys_are_created_listed_and_revoked_once(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await repo.create_user(session, "alice", "hash", Role.OPERATOR)
        await repo.create_user(session, "bob", "hash", Role.VIEWER)
        server = await new_server(session, owner="alice")
        scoped = await add_key(session, "alice", server_uuid=server)
        every = await add_key(session, "alice")
        bobs = await add_key(session, "bob")
    async with sessions() as session:
        assert {k.key_id for k in await repo.list_api_keys(session, "alice")} == {scoped, every}
        assert [k.key_id for k in await repo.list_api_keys(session, server_uuid=server)] == [scoped]
        assert len(await repo.list_api_keys(session)) == 3
        found = await repo.api_key_with_owner(session, bobs)
        assert found is not None and found[1].username == "bob" and found[0].server_uuid is None
        assert await repo.api_key_with_owner(session, "0" * 12) is None
    async with sessions.begin() as session:
        first = (await repo.revoke_api_key(session, scoped)).revoked_at
    async with sessions.begin() as session:
        again = (await repo.revoke_api_key(session, scoped)).revoked_at
    assert first is not None and again == first
    async with sessions.begin() as session:
        with pytest.raises(repo.NotFound):
            await repo.revoke_api_key(session, "f" * 12)


async def test_a_key_needs_an_existing_owner(sessions: Sessions) -> None:
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            await add_key(session, "nobody")


async def test_last_used_only_moves_forward(sessions: Sessions) -> None:
    now = dt.datetime.now(dt.UTC)
    async with sessions.begin() as session:
        await repo.create_user(session, "alice", "hash", Role.OPERATOR)
        key = await add_key(session, "alice")
    async with sessions.begin() as session:
        await repo.touch_api_keys(session, {key: now})
    async with sessions.begin() as session:
        await repo.touch_api_keys(session, {key: now - dt.timedelta(minutes=1)})
    async with sessions() as session:
        record = await repo.get_api_key(session, key)
        assert record is not None and record.last_used_at == now


async def test_disabling_a_user_keeps_the_first_time(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        await repo.create_user(session, "alice", "hash", Role.OPERATOR)
    async with sessions.begin() as session:
        first = (await repo.set_user_disabled(session, "alice", True)).disabled_at
    async with sessions.begin() as session:
        again = (await repo.set_user_disabled(session, "alice", True)).disabled_at
    assert first is not None and again == first
    async with sessions.begin() as session:
        assert (await repo.set_user_disabled(session, "alice", False)).disabled_at is None
        with pytest.raises(repo.NotFound):
            await repo.set_user_disabled(session, "nobody", True)
    async with sessions() as session:
        assert [u.username for u in await repo.list_users(session)] == ["alice"]
