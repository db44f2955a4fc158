"""Retiring the old table: rename it as an archive, optionally export it, and drop it.

Renaming is the reversible half (rename back); dropping is not, so the flow asks for an
approval first. Names are quoted by SQLAlchemy's dialect preparer, never pasted raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema as tables
from shiftover.control.store import _audit
from shiftover.engines import dialect_for
from shiftover.errors import ShiftoverError
from shiftover.flags.routing import writes_key
from shiftover.mapping import forget_reflections
from shiftover.spec import MigrationSpec


def archive_table(spec: MigrationSpec) -> str:
    """The name the old table is kept under between the archive step and the drop."""
    return f"{spec.source.table}{spec.archive.suffix}"


def rename_table(engine: Engine, old: str, new: str, schema: str | None = None) -> None:
    """Rename ``old`` to ``new`` (the archive step and its inverse)."""
    inspector = sa.inspect(engine)
    if inspector.has_table(new, schema=schema) and not inspector.has_table(old, schema=schema):
        return  # already renamed: a re-run resumes
    if not inspector.has_table(old, schema=schema):
        raise ShiftoverError(f"cannot archive: no table {old!r} in {engine.url.render_as_string()}")
    quote = engine.dialect.identifier_preparer.quote
    qualified = f"{quote(schema)}." if schema else ""
    with engine.begin() as conn:
        conn.execute(sa.text(dialect_for(engine).rename_ddl(qualified, quote(old), quote(new))))
    forget_reflections()


def drop_table(engine: Engine, name: str, schema: str | None = None) -> bool:
    """Drop a table if it exists; True when something was dropped."""
    if not sa.inspect(engine).has_table(name, schema=schema):
        return False
    sa.Table(name, sa.MetaData(), schema=schema).drop(engine)
    forget_reflections()
    return True


def export_parquet(
    engine: Engine, table: str, directory: str | Path, schema: str | None = None, chunk_rows: int = 50_000
) -> ParquetExport:
    """Write ``table`` to ``directory/<table>.parquet`` in chunks (bounded memory); returns rows and path."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(directory) / f"{table}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    source = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=engine)
    rows, writer = 0, None
    try:
        with engine.connect() as conn:
            for chunk in pd.read_sql(sa.select(source), conn, chunksize=chunk_rows):
                batch = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema)
                writer.write_table(batch.cast(writer.schema))
                rows += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # an empty table still gets a file with its columns
        pq.write_table(pa.table({c.name: pa.array([], pa.string()) for c in source.columns}), path)
    return ParquetExport(path=str(path), rows=rows)


@dataclass(frozen=True)
class ParquetExport:
    path: str
    rows: int


def remove_routing_flags(store: Engine, migration: str, actor: str) -> list[str]:
    """Delete the migration's routing flags once the old table is gone; audited.

    The writes flag stays, pinned at ``new_only``: an application instance that still runs
    the dual-writer would otherwise fall back to the no-flag default (old store only) and
    write to a table that no longer exists.
    """
    t = tables.flags
    keep = writes_key(migration)
    with store.begin() as conn:
        keys = [
            k
            for (k,) in conn.execute(sa.select(t.c.key).where(t.c.key.startswith(f"{migration}:", autoescape=True)))
            if k != keep
        ]
        if keys:
            conn.execute(t.delete().where(t.c.key.in_(keys)))
        _audit(conn, migration, actor, "flags_removed", {"removed": keys, "kept": keep})
    return keys
