"""Wait for a server record to reach a status (components update it asynchronously)."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import repo
from modelserve.shared.db.models import ServerRecord


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
