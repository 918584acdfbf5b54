"""Contract violations on server records, as a list.

A failed serve request that broke the resource contract keeps each reason as
its own item, so the dashboard and the CLI can show them one by one instead of
parsing the status message.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("server_records") as batch:
        batch.add_column(sa.Column("violations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("server_records") as batch:
        batch.drop_column("violations")
