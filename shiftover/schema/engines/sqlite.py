"""SQLite: plain ALTER (ADD COLUMN with a constant default is schema-only), AFTER triggers.

SQLite triggers cannot set ``NEW``: AFTER triggers update the row by its key. Recursion is
guarded by the same in-step tests as the other engines (a trigger writes only when the pair is out
of step), so it stops after one nested update even with ``PRAGMA recursive_triggers`` on. The lock
bound is ``PRAGMA busy_timeout`` for the statement; "database is locked" is retried.
stop_sync swaps the two-way triggers for forward-only ones (``<trigger>_fwd_ins``/``_fwd_upd``, old ->
new only) in one ``BEGIN IMMEDIATE`` transaction, and drop_old_columns drops them in the columns'
(SQLite refuses to drop a column a trigger names). SQLite has no session variables: ``sync_off``
does nothing here, for these triggers as for the two-way ones.

``CREATE INDEX`` is plain (SQLite has no concurrent build: writers wait for it, readers in WAL mode
go on; the statement is one short write transaction per index). A CHECK, a NOT NULL or a foreign key
on an existing table is refused: SQLite's ALTER TABLE cannot add either, and the only way is the 12-step
table rebuild (a copy of the whole table under the database's write lock: every writer gets
``database is locked`` until it ends; field notes: 8.5 s on 2M rows), which Shiftover does not do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from shiftover.control.file_lock import exclusive_file_lock
from shiftover.schema.engines import SchemaDialect, SyncGroup, all_null, any_not_null, on_row

DEFAULT_BUSY_MS = 30_000  # what shiftover.engines.sqlite sets on every connection
_REBUILD = (
    "SQLite's ALTER TABLE cannot add {what} to an existing table; the only way is the 12-step table "
    "rebuild, a copy of the whole table under the database's write lock (every writer gets 'database "
    "is locked' until it ends), which Shiftover does not do online"
)
REFUSED = {
    "add_check": _REBUILD.format(what="a CHECK constraint"),
    "set_not_null": _REBUILD.format(what="NOT NULL"),
    "add_foreign_key": _REBUILD.format(what="a foreign key"),
    "version_schema": "SQLite has no schemas to put a version in (an attached database is per connection) "
    "and its views are read-only, so new code could not write through one",
    "rename_table": "a SQLite view is read-only (writes through the old name would need INSTEAD OF triggers, "
    "which Shiftover does not generate), so code still writing the old name would fail",
}


class SQLiteSchema(SchemaDialect):
    name = "sqlite"
    trigger_names_sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t ORDER BY 1"
    transactional_ddl = False  # pysqlite runs each DDL statement in its own transaction

    def distinct(self, a: str, b: str) -> str:
        return f"{a} IS NOT {b}"

    def bound(self, param: str, type_: str) -> str:
        # as bound: a CAST to a type with no affinity of its own is a CAST to NUMERIC, turning
        # '2024-01-01' into 2024, where a column of that type keeps the text
        return param

    def online_refusal(self, op: str) -> str | None:
        return REFUSED.get(op)

    def index_name_taken(self, conn: sa.Connection, table: str, name: str) -> bool:
        found = conn.execute(sa.text("SELECT count(*) FROM sqlite_master WHERE name = :n"), {"n": name.strip('"')})
        return bool(found.scalar())  # index names are database-wide

    @contextmanager
    def ddl_mutex(self, engine: sa.Engine, schema: str | None, table: str) -> Iterator[None]:
        # SQLite has no named locks: an exclusive flock on a file beside the database file as SQLite
        # opened it, links resolved (only processes on one machine can share a SQLite file); one lock
        # for the whole file, as SQLite's own write lock, re-entrant in its thread (two tables of one
        # file, claimed together). An in-memory database has one user.
        with engine.connect() as conn:
            path = conn.exec_driver_sql("SELECT file FROM pragma_database_list WHERE name = 'main'").scalar()
        if not path:
            yield
            return
        with exclusive_file_lock(f"{os.path.realpath(path)}-shiftover-ddl.lock"):
            yield

    def sync_install(self, group: SyncGroup) -> list[str]:
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        set_new = ", ".join(f"{n} = {up}" for n, up in zip(group.news, group.ups, strict=True))
        set_old = ", ".join(f"{o} = {down}" for o, down in zip(group.olds, group.downs, strict=True))
        new_changed = self.any_distinct(new, on_row(group.news, "OLD"))
        old_changed = self.any_distinct(old, on_row(group.olds, "OLD"))
        new_kept = " AND ".join(f"{n} IS {o}" for n, o in zip(new, on_row(group.news, "OLD"), strict=True))
        where = " AND ".join(f"{k} = NEW.{k}" for k in group.key)
        ins, upd = (group.trigger_name(s, qualified=True) for s in ("ins", "upd"))
        return [
            f"""CREATE TRIGGER IF NOT EXISTS {ins} AFTER INSERT ON {group.table} FOR EACH ROW BEGIN
  UPDATE {group.table} SET {set_new}
    WHERE {where} AND ({all_null(group.news)}) AND ({any_not_null(group.olds)});
  UPDATE {group.table} SET {set_old}
    WHERE {where} AND ({any_not_null(group.news)}) AND ({self.any_distinct(new, group.ups)});
END""",
            f"""CREATE TRIGGER IF NOT EXISTS {upd} AFTER UPDATE ON {group.table} FOR EACH ROW
WHEN {new_changed} OR {old_changed} BEGIN
  UPDATE {group.table} SET {set_old}
    WHERE {where} AND ({new_changed}) AND ({self.any_distinct(new, group.ups)});
  UPDATE {group.table} SET {set_new}
    WHERE {where} AND {new_kept} AND ({old_changed})
      AND ({self.any_distinct(old, group.downs)});
END""",
        ]

    def sync_remove(self, group: SyncGroup) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {group.trigger_name(s, qualified=True)}" for s in ("ins", "upd")]

    def trigger_names(self, pair_trigger: str) -> list[str]:
        return [f"{pair_trigger}_ins", f"{pair_trigger}_upd"]

    # pysqlite commits each DDL statement alone; after this the statements of a step run with
    # ``together`` share one transaction (and the write lock from its start, within busy_timeout)
    begin_transaction_sql = "BEGIN IMMEDIATE"

    def sync_forward_install(self, group: SyncGroup) -> list[str]:
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        set_new = ", ".join(f"{n} = {up}" for n, up in zip(group.news, group.ups, strict=True))
        old_changed = self.any_distinct(old, on_row(group.olds, "OLD"))
        new_kept = " AND ".join(f"{n} IS {o}" for n, o in zip(new, on_row(group.news, "OLD"), strict=True))
        where = " AND ".join(f"{k} = NEW.{k}" for k in group.key)
        ins, upd = (group.trigger_name(f"{self.FORWARD}_{s}", qualified=True) for s in ("ins", "upd"))
        # dropped and created again (in stop_sync's one transaction): IF NOT EXISTS would keep a body
        # an earlier version wrote. The nested UPDATE changes new columns only: it fires no forward
        # work again (its WHEN needs an old column changed)
        return [
            f"DROP TRIGGER IF EXISTS {ins}",
            f"""CREATE TRIGGER {ins} AFTER INSERT ON {group.table} FOR EACH ROW BEGIN
  UPDATE {group.table} SET {set_new}
    WHERE {where} AND ({all_null(group.news)}) AND ({any_not_null(group.olds)});
END""",
            f"DROP TRIGGER IF EXISTS {upd}",
            f"""CREATE TRIGGER {upd} AFTER UPDATE ON {group.table} FOR EACH ROW
WHEN {new_kept} AND ({old_changed}) BEGIN
  UPDATE {group.table} SET {set_new}
    WHERE {where} AND ({self.any_distinct(new, group.ups)});
END""",
        ]

    def sync_forward_remove(self, group: SyncGroup) -> list[str]:
        names = (group.trigger_name(f"{self.FORWARD}_{s}", qualified=True) for s in ("ins", "upd"))
        return [f"DROP TRIGGER IF EXISTS {n}" for n in names]

    def forward_trigger_names(self, pair_trigger: str) -> list[str]:
        return [f"{pair_trigger}_{self.FORWARD}_ins", f"{pair_trigger}_{self.FORWARD}_upd"]

    def begin_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(timeout_ms)}")

    def end_ddl(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {DEFAULT_BUSY_MS}")

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return "database is locked" in str(error.orig)
