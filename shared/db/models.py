"""Tables: model records, server records, users, API keys, and the processed-events ledger.

The same schema runs on SQLite (embedded default) and Postgres; column types are
chosen so that both engines hand back the same Python values (UUIDs, JSON,
timezone-aware UTC datetimes).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC on the way in and out; SQLite stores naive text otherwise."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; modelserve stores UTC-aware datetimes only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Role(enum.StrEnum):
    """User roles, strongest first: admin > operator > viewer."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


def _in(values: type[enum.StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON()}


class ModelRecord(Base):
    """A GGUF that is in our object store, with what its header says."""

    __tablename__ = "model_records"

    model_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255), unique=True)
    object_path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    architecture: Mapped[str | None] = mapped_column(String(64))
    file_type: Mapped[str | None] = mapped_column(String(64))
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    context_length: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(2048))
    gguf: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServerRecord(Base):
    """One served model instance, addressed by its UUID at the gateway."""

    __tablename__ = "server_records"
    __table_args__ = (
        CheckConstraint("progress IS NULL OR (progress >= 0 AND progress <= 100)", name="progress"),
    )

    server_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    model_uuid: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("model_records.model_uuid", ondelete="SET NULL"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    runtime_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    # Written only through modelserve.shared.lifecycle (the migrations hold its CHECK).
    status: Mapped[str] = mapped_column(String(16))
    status_message: Mapped[str | None] = mapped_column(Text)
    violations: Mapped[list[str] | None] = mapped_column(JSON)  # contract reasons, one each
    progress: Mapped[float | None] = mapped_column(Float)
    memory_current_mb: Mapped[float | None] = mapped_column(Float)
    memory_max_mb: Mapped[float | None] = mapped_column(Float)
    cpu_usage_percent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    namespace: Mapped[str | None] = mapped_column(String(63))
    inference_service: Mapped[str | None] = mapped_column(String(63))
    pod_names: Mapped[list[str] | None] = mapped_column(JSON)
    service_name: Mapped[str | None] = mapped_column(String(255))
    internal_url: Mapped[str | None] = mapped_column(String(2048))
    gateway_url: Mapped[str | None] = mapped_column(String(2048))


class User(Base):
    """A person or service account that signs in for access tokens."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN ({_in(Role)})", name="role"),)

    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Set by an admin: from then on every token and key of this user is refused.
    disabled_at: Mapped[dt.datetime | None] = mapped_column()
    # Tokens (prompt + completion) per UTC day through the gateway; None: no limit.
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """A long-lived credential for one server or all the owner's: only its hash is kept.

    ``key_id`` is the short public part of the key (``msk_<key_id>_<secret>``), so a
    presented key is found by primary key and its secret compared in constant time.
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(
        String(255), ForeignKey("users.username", ondelete="CASCADE"), index=True
    )
    # None: every server the owner may use; else exactly this one.
    server_uuid: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("server_records.server_uuid", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)  # None: no limit


class ProcessedEvent(Base):
    """CloudEvents already handled, keyed by (source, id): delivery is at least once."""

    __tablename__ = "processed_events"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255), index=True)
    processed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Lease(Base):
    """One holder at a time for a named job, until ``expires_at`` (renewed while alive)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime] = mapped_column()


class UsageMinute(Base):
    """Tokens through the gateway, summed per minute, server, user and key.

    ``key_id`` is ``""`` for requests made with a JWT (a primary key column
    cannot be NULL). Rows are written in batches by the gateway, never per request.
    """

    __tablename__ = "usage_minutes"

    minute: Mapped[dt.datetime] = mapped_column(primary_key=True)
    server_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
