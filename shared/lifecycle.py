"""A server's lifecycle: its statuses, the moves allowed between them, and the one
function that makes a move.

Every writer of a server's status (the API, each pipeline step, the operator, the
local backend, the gateway's wake-up) goes through :func:`transition`. It is a
compare-and-set in the database: the ``UPDATE`` only matches while the record is
in a status the move may start from, so two writers racing each other cannot
both win, a late or redelivered event never moves a server backwards, and a
server that was deleted or failed meanwhile stays so. A refused move writes
nothing and says where the server is now, so the caller can stop (a step acks
its event; the apply step removes the ModelServe it just wrote).

    requested -> checking -> mirroring -> validating -> applying -> pending
        -> loading <-> ready <-> idle
    any of these -> failed;  any but deleted -> deleting -> deleted
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelserve.shared.db import changes
from modelserve.shared.db.errors import NotFound
from modelserve.shared.db.models import ServerRecord, utcnow


class ServerStatus(enum.StrEnum):
    REQUESTED = "requested"  # the API recorded the request and published serve.requested
    CHECKING = "checking"  # availability: is the GGUF in our store?
    MIRRORING = "mirroring"  # signed URL, download, verification (progress %)
    VALIDATING = "validating"  # the resource contract
    APPLYING = "applying"  # writing the ModelServe
    PENDING = "pending"  # the ModelServe exists; no runtime yet
    LOADING = "loading"  # a runtime is starting (or restarting)
    READY = "ready"  # answering at the gateway
    IDLE = "idle"  # scaled to zero; the next request wakes it
    FAILED = "failed"  # with the reason in status_message
    DELETING = "deleting"  # deletion asked; resources are being removed
    DELETED = "deleted"  # nothing is left but the record (the model stays mirrored)


S = ServerStatus

# from -> the statuses it may move to. A status listed as its own target may be
# written again (progress, messages, a redelivered event redoing its step).
MOVES: Mapping[ServerStatus, frozenset[ServerStatus]] = {
    S.REQUESTED: frozenset({S.CHECKING, S.FAILED, S.DELETING}),
    S.CHECKING: frozenset({S.CHECKING, S.MIRRORING, S.VALIDATING, S.FAILED, S.DELETING}),
    S.MIRRORING: frozenset({S.MIRRORING, S.VALIDATING, S.FAILED, S.DELETING}),
    S.VALIDATING: frozenset({S.VALIDATING, S.APPLYING, S.FAILED, S.DELETING}),
    S.APPLYING: frozenset({S.APPLYING, S.PENDING, S.FAILED, S.DELETING}),
    S.PENDING: frozenset({S.LOADING, S.READY, S.FAILED, S.DELETING}),
    S.LOADING: frozenset({S.LOADING, S.READY, S.FAILED, S.DELETING}),
    S.READY: frozenset({S.READY, S.LOADING, S.IDLE, S.FAILED, S.DELETING}),
    S.IDLE: frozenset({S.LOADING, S.READY, S.FAILED, S.DELETING}),
    S.FAILED: frozenset({S.DELETING}),
    S.DELETING: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}

# The same table read the other way: where a move to each status may start.
SOURCES: Mapping[ServerStatus, frozenset[ServerStatus]] = {
    to: frozenset(s for s, targets in MOVES.items() if to in targets) for to in ServerStatus
}

PIPELINE = (S.REQUESTED, S.CHECKING, S.MIRRORING, S.VALIDATING, S.APPLYING, S.PENDING)
GONE = frozenset({S.FAILED, S.DELETING, S.DELETED})  # nothing more may run for it


def allowed(current: ServerStatus, to: ServerStatus) -> bool:
    return to in MOVES[current]


@dataclass(frozen=True)
class Moved:
    """The outcome of a move: whether it happened, and the status the server has now."""

    ok: bool
    status: ServerStatus

    def __bool__(self) -> bool:
        return self.ok

    @property
    def gone(self) -> bool:
        """The server failed or is being deleted: stop, and undo what was just made."""
        return self.status in GONE


_FIELDS = frozenset(
    c.name
    for c in ServerRecord.__table__.columns
    if c.name not in {"server_uuid", "created_at", "status"}
)


async def transition(
    session: AsyncSession, server: uuid.UUID, to: ServerStatus, **fields: Any
) -> Moved:
    """Move ``server`` to ``to`` and set ``fields`` with it, atomically, if the table
    allows the move from the status it has now; otherwise change nothing.

    Raises NotFound when there is no such server.
    """
    to = ServerStatus(to)
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"not server-record fields: {', '.join(sorted(unknown))}")
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now, **fields, "status": to.value}
    if to is S.DELETED:
        values.setdefault("internal_url", None)  # nothing answers there any more
    if to is S.READY and "started_at" not in fields:
        values["started_at"] = func.coalesce(ServerRecord.started_at, now)
    result = await session.execute(
        update(ServerRecord)
        .where(
            ServerRecord.server_uuid == server,
            ServerRecord.status.in_([s.value for s in SOURCES[to]]),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) == 1:
        changes.changed(session, server)  # a cached copy (the gateway's) goes at the commit
        return Moved(True, to)
    current = await session.scalar(
        select(ServerRecord.status).where(ServerRecord.server_uuid == server)
    )
    if current is None:
        raise NotFound(f"no server {server}")
    return Moved(False, ServerStatus(current))


async def move(
    sessions: async_sessionmaker[AsyncSession], server: uuid.UUID, to: ServerStatus, **fields: Any
) -> Moved:
    """:func:`transition` in a transaction of its own."""
    async with sessions.begin() as session:
        return await transition(session, server, to, **fields)


async def create(
    session: AsyncSession,
    *,
    server_uuid: uuid.UUID,
    model_name: str,
    owner: str | None,
    runtime_params: dict[str, Any],
    replicas: int,
    gateway_url: str,
) -> ServerRecord:
    """Record a new server, ``requested``: the only place a server record is born."""
    record = ServerRecord(
        server_uuid=server_uuid,
        model_name=model_name,
        owner=owner,
        runtime_params=runtime_params,
        replicas=replicas,
        status=S.REQUESTED.value,
        gateway_url=gateway_url,
    )
    session.add(record)
    await session.flush()
    return record


async def finish_deletion(
    sessions: async_sessionmaker[AsyncSession], server: uuid.UUID, message: str
) -> Moved:
    """Mark a server whose resources are all gone ``deleted`` (through ``deleting``
    when the deletion did not start at the API, e.g. a ModelServe removed by hand)."""
    async with sessions.begin() as session:
        await transition(session, server, S.DELETING, status_message=message)
        return await transition(session, server, S.DELETED, status_message=message)


async def sweep_deletions(
    sessions: async_sessionmaker[AsyncSession], present: set[uuid.UUID]
) -> list[uuid.UUID]:
    """Finish every ``deleting`` server that has no resource left (none in ``present``).

    A ModelServe deleted before its backend ever saw it leaves nobody else to
    write ``deleted``; the backends call this on their loop.
    """
    async with sessions() as session:
        waiting = (
            await session.scalars(
                select(ServerRecord.server_uuid).where(ServerRecord.status == S.DELETING.value)
            )
        ).all()
    done = []
    for server in set(waiting) - present:
        async with sessions.begin() as session:
            if await transition(session, server, S.DELETED, status_message="deleted"):
                done.append(server)
    return done
