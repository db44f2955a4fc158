"""Retiring the old table: rename it as an archive, optionally export it, and drop it.

Renaming is the reversible half (rename back); dropping is not, so the flow asks for an
approval first. Names are quoted by SQLAlchemy's dialect preparer, never pasted raw.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.errors import ShiftoverError
from shiftover.mapping import forget_reflections


def archive_name(table: str, suffix: str) -> str:
    return f"{table}{suffix}"


def rename_table(engine: Engine, old: str, new: str, schema: str | None = None) -> None:
    """Rename ``old`` to ``new`` (the archive step and its inverse)."""
    inspector = sa.inspect(engine)
    if inspector.has_table(new, schema=schema) and not inspector.has_table(old, schema=schema):
        return  # already renamed: a re-run resumes
    if not inspector.has_table(old, schema=schema):
        raise ShiftoverError(f"cannot archive: no table {old!r} in {engine.url.render_as_string()}")
    quote = engine.dialect.identifier_preparer.quote
    qualified = f"{quote(schema)}." if schema else ""
    if engine.dialect.name == "mysql":
        ddl = f"RENAME TABLE {qualified}{quote(old)} TO {qualified}{quote(new)}"
    else:
        ddl = f"ALTER TABLE {qualified}{quote(old)} RENAME TO {quote(new)}"
    with engine.begin() as conn:
        conn.execute(sa.text(ddl))
    forget_reflections()


def drop_table(engine: Engine, name: str, schema: str | None = None) -> bool:
    """Drop a table if it exists; True when something was dropped."""
    if not sa.inspect(engine).has_table(name, schema=schema):
        return False
    sa.Table(name, sa.MetaData(), schema=schema).drop(engine)
    forget_reflections()
    return True
