"""Alembic environment for the control store; run through ``ControlStore.upgrade``."""

from __future__ import annotations

from alembic import context

from shiftover.control.schema import metadata
from shiftover.control.store import VERSION_TABLE


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters a table by copying it; elsewhere batch ops are plain ALTERs
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
