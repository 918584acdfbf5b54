"""Alembic environment: runs on the connection handed in by ``migrate.upgrade``."""

from __future__ import annotations

from alembic import context

from modelserve.shared.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through modelserve.shared.db.migrate (it passes the connection)"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite can only ALTER through table copies
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
