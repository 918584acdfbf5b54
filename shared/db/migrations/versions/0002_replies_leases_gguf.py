"""Stored replies in the event ledger, GGUF facts on model records, leases.

- processed_events.reply: a step answers a redelivered event with the reply it
  gave the first time, so a reply lost in transit does not stall the chain.
- model_records.gguf: every header fact the contract needs (head counts, ...).
- leases: one holder at a time for a named job (one download per model).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelserve.shared.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("processed_events") as batch:
        batch.add_column(sa.Column("reply", sa.JSON(), nullable=True))
    with op.batch_alter_table("model_records") as batch:
        batch.add_column(sa.Column("gguf", sa.JSON(), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("model_records") as batch:
        batch.drop_column("gguf")
    with op.batch_alter_table("processed_events") as batch:
        batch.drop_column("reply")
