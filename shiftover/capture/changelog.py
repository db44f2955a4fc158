"""Install, replay and remove trigger capture on the old table.

``capture_ddl`` returns the DDL as text without touching a database, so ``shiftover plan``
can show it before anything is applied. ``replay_changelog`` reads the changelog in sequence
order, makes each key in the new table equal to the old table's current row with
``rowsync.sync_keys``, and deletes exactly the changelog rows it consumed (a change committed
later with a lower sequence number is still picked up by the next pass). A crash between the
copy and the delete only replays those keys again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.capture.triggers import CaptureNames, install_ddl, remove_ddl
from shiftover.connect import normalise_url
from shiftover.control.store import key_from_json
from shiftover.engines import backend_name, run_literal
from shiftover.errors import CaptureError
from shiftover.mapping import TableMapping
from shiftover.rowsync import sync_keys
from shiftover.spec import MigrationSpec


@dataclass(frozen=True)
class ReplayResult:
    changes: int  # changelog rows consumed
    keys: int  # distinct keys made equal
    batches: int
    remaining: int  # changelog rows left (when max_changes stopped the replay)


def names_for(mapping: TableMapping) -> CaptureNames:
    return CaptureNames.of(mapping.source_table, mapping.source_schema)


def capture_ddl(spec: MigrationSpec) -> str:
    """The DDL that ``install_capture`` would run on the spec's source, as text (no connection)."""
    dialect = normalise_url(spec.source.url).get_dialect()()
    names = CaptureNames.of(spec.source.table, spec.source.schema_name)
    return ";\n\n".join(install_ddl(dialect, names, spec.key)) + ";\n"


def install_capture(old: Engine, mapping: TableMapping) -> CaptureNames:
    """Create the changelog table and triggers on the old table (idempotent)."""
    names = names_for(mapping)
    _run(old, install_ddl(old.dialect, names, mapping.key), "install")
    return names


def remove_capture(old: Engine, mapping: TableMapping, *, keep_changelog: bool = False) -> None:
    """Drop the triggers (and the changelog unless kept): what decommission calls."""
    _run(old, remove_ddl(old.dialect, names_for(mapping), keep_changelog=keep_changelog), "remove")


def capture_installed(old: Engine, mapping: TableMapping) -> bool:
    names = names_for(mapping)
    return sa.inspect(old).has_table(names.changelog, schema=names.schema)


def changelog_depth(old: Engine, mapping: TableMapping) -> int:
    log = _changelog_table(old, mapping)
    with old.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(log)).scalar() or 0)


def replay_changelog(
    old: Engine, new: Engine, mapping: TableMapping, *, batch: int = 1_000, max_changes: int | None = None
) -> ReplayResult:
    """Apply captured changes to the new table in sequence order, until the changelog is empty."""
    log = _changelog_table(old, mapping)
    changes = keys = batches = 0
    while max_changes is None or changes < max_changes:
        limit = batch if max_changes is None else min(batch, max_changes - changes)
        with old.connect() as conn:
            rows = conn.execute(sa.select(log.c.seq, log.c.key_json).order_by(log.c.seq).limit(limit)).all()
        if not rows:
            break
        distinct = list(dict.fromkeys(key_from_json(r.key_json) for r in rows))
        sync_keys(old, new, mapping, distinct)
        with old.begin() as conn:
            conn.execute(log.delete().where(log.c.seq.in_([r.seq for r in rows])))
        changes, keys, batches = changes + len(rows), keys + len(distinct), batches + 1
    remaining = changelog_depth(old, mapping) if max_changes is not None else 0
    return ReplayResult(changes, keys, batches, remaining)


def _changelog_table(old: Engine, mapping: TableMapping) -> sa.Table:
    names = names_for(mapping)
    return sa.Table(
        names.changelog,
        sa.MetaData(),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("op", sa.String(1)),
        sa.Column("key_json", sa.Text),
        schema=names.schema,
    )


def _run(engine: Engine, statements: list[str], what: str) -> None:
    try:
        with engine.begin() as conn:
            for stmt in statements:
                run_literal(conn, stmt)
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        raise CaptureError(f"could not {what} trigger capture on {backend_name(engine)}: {reason}") from None
