"""``/events``: the servers' changes as server-sent events, for the dashboard.

A status change (status, progress, message) goes out on the next poll; a change
of the live figures alone (memory, CPU), which the backends write every few
seconds while a server runs, at most once per ``usage_every`` seconds per server,
so a busy server cannot flood the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.per_user import PerUserLimit
from modelserve.functions.api.schemas import Server
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role

POLL_SECONDS = 0.5
USAGE_EVERY_SECONDS = 2.0
log = logging.getLogger(__name__)


@dataclass
class Sent:
    state: tuple[Any, ...]
    usage: tuple[Any, ...]
    at: float


class Changes:
    """What each server last looked like on one stream, and what is due to be sent."""

    def __init__(self, usage_every: float = USAGE_EVERY_SECONDS) -> None:
        self.usage_every = usage_every
        self.sent: dict[uuid.UUID, Sent] = {}

    def due(self, row: Server, now: float) -> bool:
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


class Feed:
    """One database poll for every open stream: each stream used to poll on its own,
    so 200 open dashboards slowed every other query. The poll runs while anyone
    listens; a slow reader skips to the newest snapshot instead of queueing them."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.sessions, self.poll_seconds = sessions, poll_seconds
        self.listeners: set[asyncio.Queue[list[Server]]] = set()
        self.polls = 0
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[list[Server]]]:
        queue: asyncio.Queue[list[Server]] = asyncio.Queue(maxsize=1)
        self.listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            yield queue
        finally:
            self.listeners.discard(queue)
            if not self.listeners and self._task is not None:
                self._task.cancel()

    async def _poll(self) -> None:
        while self.listeners:
            try:
                async with self.sessions() as session:
                    rows = await repo.list_servers(session, oldest_change_first=True)
                snapshot = [Server.of(r) for r in rows]
                self.polls += 1
            except Exception as exc:  # a database hiccup: the streams wait for the next poll
                log.warning("server feed: %s", exc)
            else:
                for queue in list(self.listeners):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(snapshot)
            await asyncio.sleep(self.poll_seconds)


def router(deps: ApiDeps, feed: Feed | None = None) -> APIRouter:
    api = APIRouter(tags=["servers"])
    viewer = deps.role(Role.VIEWER)
    servers = feed or Feed(deps.sessions)
    open_streams = PerUserLimit("event streams", deps.settings.events_streams_per_user)

    @api.get("/events")
    async def status_events(request: Request, claims: Claims = viewer) -> StreamingResponse:
        """Server-sent events: a ``server`` event per change of a server, in order.

        At most ``settings.events_streams_per_user`` open per user (429 past it).
        """
        slot = open_streams.open(claims.subject)

        async def stream() -> AsyncIterator[str]:
            try:
                changes = Changes()
                async with servers.listen() as snapshots:
                    while not await request.is_disconnected():
                        try:
                            snapshot = await asyncio.wait_for(snapshots.get(), timeout=5)
                        except TimeoutError:
                            continue
                        now = time.monotonic()
                        for row in snapshot:
                            if changes.due(row, now):
                                yield f"event: server\ndata: {row.model_dump_json()}\n\n"
            finally:
                slot.close()

        events = stream()
        slot.held_by(events)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return api
