"""``/events``: the servers' changes as server-sent events, for the dashboard.

A status change (status, progress, message) goes out on the next poll; a change
of the live figures alone (memory, CPU), which the backends write every few
seconds while a server runs, at most once per ``usage_every`` seconds per server,
so a busy server cannot flood the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import Server
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role, ServerRecord

POLL_SECONDS = 0.5
USAGE_EVERY_SECONDS = 2.0


@dataclass
class Sent:
    state: tuple[Any, ...]
    usage: tuple[Any, ...]
    at: float


class Changes:
    """What each server last looked like on this stream, and what is due to be sent."""

    def __init__(self, usage_every: float = USAGE_EVERY_SECONDS) -> None:
        self.usage_every = usage_every
        self.sent: dict[uuid.UUID, Sent] = {}

    def due(self, row: ServerRecord, now: float) -> bool:
        state = (row.status, row.progress, row.status_message)
        usage = (row.memory_current_mb, row.memory_max_mb, row.cpu_usage_percent)
        last = self.sent.get(row.server_uuid)
        if (
            last is not None
            and last.state == state
            and (last.usage == usage or now - last.at < self.usage_every)
        ):
            return False
        self.sent[row.server_uuid] = Sent(state, usage, now)
        return True


def router(deps: ApiDeps, poll_seconds: float = POLL_SECONDS) -> APIRouter:
    api = APIRouter(tags=["servers"])
    viewer = deps.role(Role.VIEWER)

    @api.get("/events")
    async def status_events(request: Request, claims: Claims = viewer) -> StreamingResponse:
        """Server-sent events: a ``server`` event per change of a server, in order."""

        async def stream() -> AsyncIterator[str]:
            changes = Changes()
            while not await request.is_disconnected():
                async with deps.sessions() as session:
                    rows = await repo.list_servers(session, oldest_change_first=True)
                now = time.monotonic()
                for row in rows:
                    if changes.due(row, now):
                        body = Server.of(row).model_dump(mode="json")
                        yield f"event: server\ndata: {json.dumps(body)}\n\n"
                await asyncio.sleep(poll_seconds)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return api
