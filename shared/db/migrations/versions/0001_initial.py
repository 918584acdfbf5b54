"""Initial schema: model records, server records, users, processed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelserve.shared.db.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Snapshots of the enums at this revision: a later status needs a new migration.
STATUSES = (
    "requested",
    "checking",
    "mirroring",
    "validating",
    "applying",
    "pending",
    "loading",
    "ready",
    "failed",
    "idle",
    "deleting",
    "deleted",
)
ROLES = ("admin", "operator", "viewer")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.create_table(
        "model_records",
        sa.Column("model_uuid", sa.Uuid(), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("object_path", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=True),
        sa.Column("file_type", sa.String(64), nullable=True),
        sa.Column("parameter_count", sa.BigInteger(), nullable=True),
        sa.Column("context_length", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(2048), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model_uuid", name="pk_model_records"),
        sa.UniqueConstraint("model_name", name="uq_model_records_model_name"),
    )
    op.create_table(
        "server_records",
        sa.Column("server_uuid", sa.Uuid(), nullable=False),
        sa.Column("model_uuid", sa.Uuid(), nullable=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("runtime_params", sa.JSON(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("memory_current_mb", sa.Float(), nullable=True),
        sa.Column("memory_max_mb", sa.Float(), nullable=True),
        sa.Column("cpu_usage_percent", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=True),
        sa.Column("inference_service", sa.String(63), nullable=True),
        sa.Column("pod_names", sa.JSON(), nullable=True),
        sa.Column("service_name", sa.String(255), nullable=True),
        sa.Column("internal_url", sa.String(2048), nullable=True),
        sa.Column("gateway_url", sa.String(2048), nullable=True),
        sa.CheckConstraint(f"status IN ({_in(STATUSES)})", name="ck_server_records_status"),
        sa.CheckConstraint(
            "progress IS NULL OR (progress >= 0 AND progress <= 100)",
            name="ck_server_records_progress",
        ),
        sa.ForeignKeyConstraint(
            ["model_uuid"],
            ["model_records.model_uuid"],
            name="fk_server_records_model_uuid_model_records",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("server_uuid", name="pk_server_records"),
    )
    op.create_index("ix_server_records_model_uuid", "server_records", ["model_uuid"])
    op.create_index("ix_server_records_model_name", "server_records", ["model_name"])
    op.create_table(
        "users",
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(f"role IN ({_in(ROLES)})", name="ck_users_role"),
        sa.PrimaryKeyConstraint("username", name="pk_users"),
    )
    op.create_table(
        "processed_events",
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "event_id", name="pk_processed_events"),
    )
    op.create_index("ix_processed_events_subject", "processed_events", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_subject", table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_table("users")
    op.drop_index("ix_server_records_model_name", table_name="server_records")
    op.drop_index("ix_server_records_model_uuid", table_name="server_records")
    op.drop_table("server_records")
    op.drop_table("model_records")
