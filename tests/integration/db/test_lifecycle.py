"""The lifecycle's one transition function on both engines: SQLite and real Postgres."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import lifecycle
from modelserve.shared.db import repo
from modelserve.shared.db.models import ServerRecord
from modelserve.shared.lifecycle import ServerStatus as S
from support.records import new_server, path_to

Sessions = async_sessionmaker[AsyncSession]


def test_every_status_is_reachable_and_only_deleted_is_final() -> None:
    for status in S:
        assert path_to(status)[-1:] in ([status], [])
    assert [s for s in S if not lifecycle.MOVES[s]] == [S.DELETED]
    assert all(S.DELETING in lifecycle.MOVES[s] for s in S if s not in {S.DELETING, S.DELETED})


async def test_create_records_one_requested_server(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        server = await new_server(session, owner="alice")
    async with sessions() as session:
        rows = (await session.execute(select(ServerRecord))).scalars().all()
    assert [(r.server_uuid, r.status, r.owner) for r in rows] == [(server, "requested", "alice")]


async def test_moves_follow_the_table_and_refusals_write_nothing(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        server = await new_server(session, status=S.VALIDATING)
    # Backwards (a late, redelivered availability event) is refused.
    moved = await lifecycle.move(sessions, server, S.CHECKING, status_message="late")
    assert (moved.ok, moved.status, moved.gone) == (False, S.VALIDATING, False)
    # Redoing the current step is allowed (a redelivery after a crash).
    assert await lifecycle.move(sessions, server, S.VALIDATING, status_message="again")
    assert await lifecycle.move(sessions, server, S.DELETING, status_message="bye")
    for late in (S.APPLYING, S.PENDING, S.LOADING, S.READY, S.FAILED):
        moved = await lifecycle.move(sessions, server, late, status_message="too late")
        assert (moved.ok, moved.status, moved.gone) == (False, S.DELETING, True)
    async with sessions() as session:
        record = await repo.get_server(session, server)
    assert (record.status, record.status_message) == ("deleting", "bye")
    assert await lifecycle.move(sessions, server, S.DELETED)
    assert not await lifecycle.move(sessions, server, S.DELETING)
    with pytest.raises(repo.NotFound):
        await lifecycle.move(sessions, uuid.uuid4(), S.CHECKING)
    with pytest.raises(ValueError, match="not server-record fields: colour"):
        await lifecycle.move(sessions, server, S.DELETED, colour="red")


async def test_ready_sets_started_at_once(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        server = await new_server(session, status=S.READY)
        first = (await repo.get_server(session, server)).started_at
    assert first is not None
    assert await lifecycle.move(sessions, server, S.LOADING, status_message="restarting")
    assert await lifecycle.move(sessions, server, S.READY)
    async with sessions() as session:
        assert (await repo.get_server(session, server, fresh=True)).started_at == first


async def test_racing_writers_cannot_both_win(sessions: Sessions) -> None:
    """Apply, delete and fail race from ``validating``."""
    for _ in range(5):
        async with sessions.begin() as session:
            server = await new_server(session, status=S.VALIDATING)
        outcomes = await asyncio.gather(
            lifecycle.move(sessions, server, S.APPLYING),
            lifecycle.move(sessions, server, S.DELETING),
            lifecycle.move(sessions, server, S.FAILED),
        )
        async with sessions() as session:
            final = S((await repo.get_server(session, server, fresh=True)).status)
        # Whatever the order, deletion wins: applying and failing may only come first.
        assert (final, outcomes[1].ok) == (S.DELETING, True)


async def test_sweep_finishes_deletions_with_nothing_left(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        lingering = await new_server(session, status=S.DELETING)
        still_there = await new_server(session, status=S.DELETING)
        running = await new_server(session, status=S.READY)
    done = await lifecycle.sweep_deletions(sessions, {still_there})
    assert done == [lingering]
    async with sessions() as session:
        statuses = {
            s: (await repo.get_server(session, s, fresh=True)).status
            for s in (lingering, still_there, running)
        }
    assert statuses == {lingering: "deleted", still_there: "deleting", running: "ready"}
