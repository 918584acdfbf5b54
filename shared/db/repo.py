"""Repository functions: idempotent create-or-get by UUID, updates, the event ledger.

Creation uses ``INSERT ... ON CONFLICT DO NOTHING`` (both SQLite and Postgres
have it) followed by a read, so two deliveries of the same event racing each
other still produce one row, and neither of them fails.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from modelserve.shared.db import changes
from modelserve.shared.db.errors import Conflict, NotFound
from modelserve.shared.db.models import (
    ApiKey,
    Lease,
    ModelRecord,
    ProcessedEvent,
    Role,
    ServerRecord,
    UsageMinute,
    User,
    utcnow,
)

__all__ = ["Conflict", "NotFound"]


def _insert_ignoring_conflicts(session: AsyncSession, table: Any, values: dict[str, Any]) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


async def _insert_ignore(session: AsyncSession, table: Any, values: dict[str, Any]) -> bool:
    """Insert unless any unique key exists; True when this call inserted the row."""
    result = await session.execute(_insert_ignoring_conflicts(session, table, values))
    return bool(getattr(result, "rowcount", 0) == 1)


# --- models -------------------------------------------------------------------


async def get_or_create_model(
    session: AsyncSession,
    *,
    model_uuid: uuid.UUID,
    model_name: str,
    object_path: str,
    sha256: str,
    size_bytes: int,
    architecture: str | None = None,
    file_type: str | None = None,
    parameter_count: int | None = None,
    context_length: int | None = None,
    source: str | None = None,
    gguf: dict[str, Any] | None = None,
) -> tuple[ModelRecord, bool]:
    """Create the model record, or return the one with that UUID; True when created."""
    created = await _insert_ignore(
        session,
        ModelRecord.__table__,
        {
            "model_uuid": model_uuid,
            "model_name": model_name,
            "object_path": object_path,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "architecture": architecture,
            "file_type": file_type,
            "parameter_count": parameter_count,
            "context_length": context_length,
            "source": source,
            "gguf": gguf,
        },
    )
    record = await session.get(ModelRecord, model_uuid, populate_existing=True)
    if record is None:
        other = await get_model_by_name(session, model_name)
        raise Conflict(
            f"model name {model_name!r} already belongs to model "
            f"{other.model_uuid if other else '(unknown)'}"
        )
    return record, created


async def get_model(session: AsyncSession, model_uuid: uuid.UUID) -> ModelRecord:
    record = await session.get(ModelRecord, model_uuid)
    if record is None:
        raise NotFound(f"no model {model_uuid}")
    return record


async def get_model_by_name(session: AsyncSession, model_name: str) -> ModelRecord | None:
    result = await session.execute(select(ModelRecord).where(ModelRecord.model_name == model_name))
    return result.scalar_one_or_none()


async def list_models(session: AsyncSession) -> Sequence[ModelRecord]:
    result = await session.execute(select(ModelRecord).order_by(ModelRecord.model_name))
    return result.scalars().all()


# --- servers ------------------------------------------------------------------


async def get_server(
    session: AsyncSession, server_uuid: uuid.UUID, *, fresh: bool = False
) -> ServerRecord:
    record = await session.get(ServerRecord, server_uuid, populate_existing=fresh)
    if record is None:
        raise NotFound(f"no server {server_uuid}")
    return record


async def list_servers(
    session: AsyncSession, owner: str | None = None, *, oldest_change_first: bool = False
) -> Sequence[ServerRecord]:
    """Newest first, or (for change streams) in the order they last changed."""
    order = ServerRecord.updated_at.asc() if oldest_change_first else ServerRecord.created_at.desc()
    query = select(ServerRecord).order_by(order)
    if owner is not None:
        query = query.where(ServerRecord.owner == owner)
    result = await session.execute(query)
    return result.scalars().all()


_UPDATABLE = frozenset(
    c.name
    for c in ServerRecord.__table__.columns
    if c.name not in {"server_uuid", "created_at", "status"}
)


async def update_server(
    session: AsyncSession, server_uuid: uuid.UUID, **fields: Any
) -> ServerRecord:
    """Set fields other than the status (usage figures, endpoints) on a server record.

    The status moves only through ``modelserve.shared.lifecycle.transition``.
    """
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not settable here: {', '.join(sorted(unknown))}")
    fields.setdefault("updated_at", utcnow())
    result = await session.execute(
        update(ServerRecord).where(ServerRecord.server_uuid == server_uuid).values(**fields)
    )
    if getattr(result, "rowcount", 0) == 0:
        raise NotFound(f"no server {server_uuid}")
    changes.changed(session, server_uuid)
    return await get_server(session, server_uuid, fresh=True)


# --- users ----------------------------------------------------------------------


async def create_user(
    session: AsyncSession, username: str, password_hash: str, role: Role
) -> tuple[User, bool]:
    """Create a user unless the name exists; True when created (never overwrites)."""
    created = await _insert_ignore(
        session,
        User.__table__,
        {"username": username, "password_hash": password_hash, "role": Role(role).value},
    )
    user = await session.get(User, username, populate_existing=True)
    assert user is not None
    return user, created


async def get_user(session: AsyncSession, username: str) -> User | None:
    return await session.get(User, username)


async def count_users(session: AsyncSession, role: Role | None = None) -> int:
    query = select(User.username)
    if role is not None:
        query = query.where(User.role == role.value)
    return len((await session.execute(query)).all())


async def list_users(session: AsyncSession) -> Sequence[User]:
    result = await session.execute(select(User).order_by(User.username))
    return result.scalars().all()


async def set_user_budget(session: AsyncSession, username: str, tokens_per_day: int | None) -> User:
    user = await session.get(User, username, populate_existing=True)
    if user is None:
        raise NotFound(f"no user {username!r}")
    user.tokens_per_day = tokens_per_day
    await session.flush()
    return user


async def set_user_disabled(session: AsyncSession, username: str, disabled: bool) -> User:
    """Disable (or enable again) a user; disabling keeps the first time it happened."""
    user = await session.get(User, username, populate_existing=True)
    if user is None:
        raise NotFound(f"no user {username!r}")
    if not disabled:
        user.disabled_at = None
    elif user.disabled_at is None:
        user.disabled_at = utcnow()
    await session.flush()
    return user


# --- API keys -------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    *,
    key_id: str,
    secret_hash: str,
    name: str,
    owner: str,
    server_uuid: uuid.UUID | None,
    expires_at: dt.datetime | None,
    tokens_per_day: int | None = None,
) -> ApiKey:
    """Record a new key (only the hash of its secret); the id is random, never reused."""
    key = ApiKey(
        key_id=key_id,
        secret_hash=secret_hash,
        name=name,
        owner=owner,
        server_uuid=server_uuid,
        expires_at=expires_at,
        tokens_per_day=tokens_per_day,
    )
    session.add(key)
    await session.flush()
    return key


async def get_api_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id, populate_existing=True)


async def api_key_with_owner(session: AsyncSession, key_id: str) -> tuple[ApiKey, User] | None:
    """The key and its owner in one query: what a credential check needs to decide."""
    result = await session.execute(
        select(ApiKey, User)
        .join(User, User.username == ApiKey.owner)
        .where(ApiKey.key_id == key_id)
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


async def api_key_ids(session: AsyncSession) -> frozenset[str]:
    """Every key id there is (revoked ones too): the guard's index of keys that exist."""
    return frozenset((await session.scalars(select(ApiKey.key_id))).all())


async def list_api_keys(
    session: AsyncSession, owner: str | None = None, server_uuid: uuid.UUID | None = None
) -> Sequence[ApiKey]:
    """Newest first, optionally one owner's or one server's."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.key_id)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    if server_uuid is not None:
        query = query.where(ApiKey.server_uuid == server_uuid)
    result = await session.execute(query)
    return result.scalars().all()


async def revoke_api_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Mark the key revoked (idempotent: the first revocation time stays)."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    key = await get_api_key(session, key_id)
    if key is None:
        raise NotFound(f"no key {key_id!r}")
    return key


async def touch_api_keys(session: AsyncSession, used: dict[str, dt.datetime]) -> None:
    """Write the last-used times gathered in memory since the last batch."""
    for key_id, when in used.items():
        await session.execute(
            update(ApiKey)
            .where(
                ApiKey.key_id == key_id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when),
            )
            .values(last_used_at=when)
        )


# --- usage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageKey:
    """One row of ``usage_minutes``: what a batch adds up under."""

    minute: dt.datetime
    server_uuid: uuid.UUID
    username: str
    key_id: str  # "" for a JWT


@dataclass
class UsageCounts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def add_usage(session: AsyncSession, batch: dict[UsageKey, UsageCounts]) -> None:
    """Add a batch to the per-minute rows (an upsert that sums: replicas write alike)."""
    dialect = session.get_bind().dialect.name
    table = UsageMinute.__table__
    for key, counts in batch.items():
        values = {
            "minute": key.minute,
            "server_uuid": key.server_uuid,
            "username": key.username,
            "key_id": key.key_id,
            "requests": counts.requests,
            "prompt_tokens": counts.prompt_tokens,
            "completion_tokens": counts.completion_tokens,
        }
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(table).values(**values)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["minute", "server_uuid", "username", "key_id"],
                set_={
                    name: table.c[name] + insert.excluded[name]
                    for name in ("requests", "prompt_tokens", "completion_tokens")
                },
            )
        )


async def usage(
    session: AsyncSession,
    *,
    username: str | None = None,
    key_id: str | None = None,
    server_uuid: uuid.UUID | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Sequence[UsageMinute]:
    """Per-minute rows, oldest first, narrowed by any of the filters."""
    query = select(UsageMinute).order_by(UsageMinute.minute, UsageMinute.server_uuid)
    if username is not None:
        query = query.where(UsageMinute.username == username)
    if key_id is not None:
        query = query.where(UsageMinute.key_id == key_id)
    if server_uuid is not None:
        query = query.where(UsageMinute.server_uuid == server_uuid)
    if since is not None:
        query = query.where(UsageMinute.minute >= since)
    if until is not None:
        query = query.where(UsageMinute.minute < until)
    return (await session.execute(query)).scalars().all()


async def tokens_since(
    session: AsyncSession,
    since: dt.datetime,
    *,
    key_id: str | None = None,
    username: str | None = None,
) -> int:
    """Prompt plus completion tokens written since ``since`` for one key or one user."""
    query = select(
        func.coalesce(func.sum(UsageMinute.prompt_tokens + UsageMinute.completion_tokens), 0)
    ).where(UsageMinute.minute >= since)
    if key_id is not None:
        query = query.where(UsageMinute.key_id == key_id)
    if username is not None:
        query = query.where(UsageMinute.username == username)
    return int((await session.execute(query)).scalar_one())


# --- processed-events ledger ------------------------------------------------------


async def mark_event_processed(
    session: AsyncSession,
    source: str,
    event_id: str,
    event_type: str,
    subject: str | None = None,
    reply: dict[str, Any] | None = None,
) -> bool:
    """Record (source, id) as handled, with the reply given; False if it was already.

    Call it in the same transaction as the step's effects: if the step fails and
    rolls back, the event stays unrecorded and its redelivery is processed.
    """
    return await _insert_ignore(
        session,
        ProcessedEvent.__table__,
        {
            "source": source,
            "event_id": event_id,
            "event_type": event_type,
            "subject": subject,
            "reply": reply,
        },
    )


async def processed_event(
    session: AsyncSession, source: str, event_id: str
) -> ProcessedEvent | None:
    """The ledger entry of (source, id), with the reply it got; None if never handled."""
    return await session.get(ProcessedEvent, (source, event_id), populate_existing=True)


async def is_event_processed(session: AsyncSession, source: str, event_id: str) -> bool:
    return await processed_event(session, source, event_id) is not None


# --- leases ---------------------------------------------------------------------------


async def acquire_lease(session: AsyncSession, name: str, holder: str, ttl: dt.timedelta) -> bool:
    """Take (or renew) the lease ``name``; False while another holder's is unexpired."""
    now = utcnow()
    if await _insert_ignore(
        session, Lease.__table__, {"name": name, "holder": holder, "expires_at": now + ttl}
    ):
        return True
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.expires_at < now, Lease.holder == holder))
        .values(holder=holder, expires_at=now + ttl)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def release_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
