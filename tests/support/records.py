"""Server records for tests: made through the lifecycle, and waited on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared import lifecycle
from modelserve.shared.db import repo
from modelserve.shared.db.models import ServerRecord
from modelserve.shared.lifecycle import ServerStatus


def path_to(status: ServerStatus) -> list[ServerStatus]:
    """The shortest run of allowed moves from ``requested`` to ``status``."""
    start = ServerStatus.REQUESTED
    came: dict[ServerStatus, ServerStatus | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for there in sorted(lifecycle.MOVES[here]):
            if there not in came:
                came[there] = here
                queue.append(there)
    assert status in came, f"{status} cannot be reached from {start}"
    steps: list[ServerStatus] = []
    at: ServerStatus | None = status
    while at is not None and at is not start:
        steps.append(at)
        at = came[at]
    return steps[::-1]


async def new_server(
    session: AsyncSession,
    *,
    status: ServerStatus | str = ServerStatus.REQUESTED,
    server_uuid: uuid.UUID | None = None,
    model_name: str = "demo",
    owner: str | None = None,
    **fields: Any,
) -> uuid.UUID:
    """A server record brought to ``status`` by the lifecycle's own moves."""
    server = server_uuid or uuid.uuid4()
    await lifecycle.create(
        session,
        server_uuid=server,
        model_name=model_name,
        owner=owner,
        runtime_params={},
        replicas=1,
        gateway_url=f"http://gateway.test/{server}",
    )
    steps = path_to(ServerStatus(status))
    for i, step in enumerate(steps):
        moved = await lifecycle.transition(
            session, server, step, **(fields if i == len(steps) - 1 else {})
        )
        assert moved, f"{server}: {moved.status} -> {step} refused"
    if not steps and fields:
        await repo.update_server(session, server, **fields)
    return server


async def wait_for_status(
    sessions: async_sessionmaker[AsyncSession],
    server: uuid.UUID,
    wanted: str,
    within: float = 90,
) -> ServerRecord:
    deadline = time.monotonic() + within
    while True:
        async with sessions() as session:
            record = await repo.get_server(session, server)
        if record.status == wanted:
            return record
        assert time.monotonic() < deadline, (
            f"server {server} is {record.status} ({record.status_message}), not {wanted}"
        )
        await asyncio.sleep(0.2)
