"""ORM support: replicate what a SQLAlchemy session commits to the old table.

The application keeps its models and sessions bound to the old store. After each flush the
keys of the migrated table's new, changed and deleted objects are collected; after the commit
they are replicated through the dual-writer (so the secondary write happens only for committed
data, and a rollback replicates nothing). The secondary side follows the same rules as the
Core methods: failures go to the reconciliation queue. This hook serves the phases where old is
the source of truth; after the write switch, sessions should be bound to the new store (or use
the Core methods), and the writer logs an error when an old-bound session commits then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from shiftover.dualwrite.writer import DualWriter

_INFO = "shiftover_keys"


def attach_session(writer: DualWriter, target: Any) -> None:
    """Listen on a ``Session`` instance, a ``sessionmaker`` or the ``Session`` class."""
    table_name = writer.mapping.source_table

    @event.listens_for(target, "after_flush")
    def _collect(session: Session, _ctx: Any) -> None:
        keys: dict[tuple[Any, ...], str] = session.info.setdefault(_INFO, {})
        for obj in list(session.new) + list(session.dirty):
            key = _key(obj, table_name, writer.mapping.key)
            if key is not None:
                keys[key] = "upsert"
        for obj in session.deleted:
            key = _key(obj, table_name, writer.mapping.key)
            if key is not None:
                keys[key] = "delete"

    @event.listens_for(target, "after_commit")
    def _replicate(session: Session) -> None:
        keys = session.info.pop(_INFO, None)
        if keys:
            writer.replicate_committed(keys)

    @event.listens_for(target, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop(_INFO, None)


def _key(obj: Any, table_name: str, key_cols: tuple[str, ...]) -> tuple[Any, ...] | None:
    state = sa.inspect(obj)
    table = state.mapper.local_table
    if getattr(table, "name", None) != table_name:
        return None
    values = []
    for col in key_cols:
        prop = state.mapper.get_property_by_column(table.c[col])
        values.append(state.attrs[prop.key].value)
    return tuple(values)
