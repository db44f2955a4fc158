"""PostgreSQL: DDL under ``SET LOCAL lock_timeout`` in one transaction; one BEFORE ROW trigger.

An ALTER waiting for its AccessExclusiveLock queues every later query on the table, SELECTs too;
the lock timeout (SQLSTATE 55P03) bounds that stall to one timeout per attempt. The transaction
commits with ``synchronous_commit`` off, so its locks go without waiting for the WAL flush, and
``flush_ddl`` waits for that flush after (the DDL is durable before the step returns). A BEFORE trigger
sets ``NEW`` and never writes the table again, so it cannot recurse; its guards (do nothing when the
pair is in step already) keep it from rewriting a column that was written in step, e.g. by the
column backfill. The backfill's session sets ``shiftover.sync_off`` to skip the trigger's work
(field notes: two-way triggers cost a 50k-batch backfill 21.2 s against 14.3 s without).
stop_sync swaps it for a forward-only trigger and function (``<trigger>_fwd``, old -> new only) in
one transaction: the two-way one dropped (AccessExclusiveLock, as stop_sync always took) and the
forward one created, so no session sees neither; drop_old_columns drops it in the columns' transaction.

Indexes are built with ``CREATE INDEX CONCURRENTLY`` (writers go on; it runs outside a transaction
under a session ``lock_timeout``, and a build that failed or timed out leaves an INVALID index,
dropped concurrently and built again on the next attempt). A CHECK is added ``NOT VALID`` (an
AccessExclusiveLock for milliseconds, new writes checked from then on) and validated in its own
transaction (ShareUpdateExclusiveLock: writers go on). NOT NULL is a validated helper
``CHECK (col IS NOT NULL)``, then ``SET NOT NULL``, which PostgreSQL 12+ proves from the check
without scanning the table, then the helper is dropped. A foreign key is added ``NOT VALID``
(ShareRowExclusiveLock on both tables for milliseconds) and validated apart (ShareUpdateExclusiveLock
on the table, RowShareLock on the referenced one: writers to both go on). A table is renamed and
a simple view of the old name (automatically updatable: reads, inserts with the table's defaults,
updates and deletes go through) created in the same transaction, so no query finds neither name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa

from shiftover.schema.engines import (
    SchemaDialect,
    SyncGroup,
    TableRename,
    all_null,
    any_not_null,
    held,
    on_row,
)

LOCK_NOT_AVAILABLE = "55P03"


def _beside(table: str, name: str) -> str:
    """An index's name qualified by its table's schema (an index lives in its table's schema)."""
    return f"{table.rsplit('.', 1)[0]}.{name}" if "." in table else name


class PostgresSchema(SchemaDialect):
    name = "postgresql"
    trigger_names_sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal ORDER BY 1"
    transactional_ddl = True

    def distinct(self, a: str, b: str) -> str:
        return f"{a} IS DISTINCT FROM {b}"

    index_outside_transaction = True

    def create_index(self, table: str, name: str, columns: Sequence[str], unique: bool, timeout_ms: int) -> str:
        unique_sql = "UNIQUE " if unique else ""
        return f"CREATE {unique_sql}INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"

    def drop_index(self, table: str, name: str, timeout_ms: int) -> str:
        return f"DROP INDEX CONCURRENTLY IF EXISTS {_beside(table, name)}"

    def index_name_taken(self, conn: sa.Connection, table: str, name: str) -> bool:
        found = conn.execute(sa.text("SELECT to_regclass(:i) IS NOT NULL"), {"i": _beside(table, name)}).scalar()
        return bool(found)  # indexes share the schema's namespace with tables, views and sequences

    def invalid_index_cleanup(self, conn: sa.Connection, table: str, name: str) -> list[str]:
        invalid = conn.execute(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"),
            {"i": _beside(table, name)},
        ).scalar()
        return [self.drop_index(table, name, 0)] if invalid else []

    def add_check(self, table: str, name: str, expression: str, timeout_ms: int) -> list[list[str]]:
        return [
            [f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({expression}) NOT VALID"],
            [f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}"],
        ]

    def set_not_null(
        self, conn: sa.Connection, table: str, column: str, helper: str, helper_exists: bool, timeout_ms: int
    ) -> list[list[str]]:
        add = (
            []
            if helper_exists
            else [f"ALTER TABLE {table} ADD CONSTRAINT {helper} CHECK ({column} IS NOT NULL) NOT VALID"]
        )
        return [
            add,
            [f"ALTER TABLE {table} VALIDATE CONSTRAINT {helper}"],
            [
                f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL",
                f"ALTER TABLE {table} DROP CONSTRAINT {helper}",
            ],
        ]

    def drop_not_null(self, conn: sa.Connection, table: str, column: str, helper: str, timeout_ms: int) -> list[str]:
        drop_helper = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {helper}"
        return [drop_helper, *self.make_nullable(conn, table, column, timeout_ms)]

    def make_nullable(self, conn: sa.Connection, table: str, column: str, timeout_ms: int) -> list[str]:
        return [f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL"]  # catalog only, no scan

    def add_foreign_key(
        self, table: str, name: str, columns: Sequence[str], ref_table: str, ref_columns: Sequence[str], timeout_ms: int
    ) -> list[list[str]]:
        cols, refs = ", ".join(columns), ", ".join(ref_columns)
        return [
            [
                f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({cols}) "
                f"REFERENCES {ref_table} ({refs}) NOT VALID"
            ],
            [f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}"],
        ]

    def rename_table(self, names: TableRename) -> list[str]:
        return [
            f"ALTER TABLE {names.table} RENAME TO {names.new_name}",
            f"CREATE VIEW {names.table} AS SELECT * FROM {names.new_table}",
        ]

    def unrename_table(self, names: TableRename) -> list[str]:
        return [self.drop_view(names.table), f"ALTER TABLE {names.new_table} RENAME TO {names.old_name}"]

    def begin_session_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        conn.exec_driver_sql(f"SET lock_timeout = '{int(timeout_ms)}ms'")

    def end_session_ddl(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("RESET lock_timeout")

    def current_schema(self, conn: sa.Connection) -> str:
        return str(conn.exec_driver_sql("SELECT current_schema()").scalar())

    def version_view(self, schema: str, view: str, table: str, columns: Sequence[str]) -> list[str]:
        # a simple view is automatically updatable: inserts and updates through it reach the table,
        # whose sync trigger fills the old columns; omitted columns take the table's defaults
        return [
            f"CREATE SCHEMA IF NOT EXISTS {schema}",
            f"CREATE OR REPLACE VIEW {schema}.{view} AS SELECT {', '.join(columns)} FROM {table}",
        ]

    def version_schema_exists(self, conn: sa.Connection, schema: str) -> bool:
        query = "SELECT count(*) FROM pg_namespace WHERE nspname = %(s)s"
        return bool(conn.exec_driver_sql(query, {"s": schema}).scalar())

    def drop_version_view(self, conn: sa.Connection, schema: str, view: str, quote: Callable[[str], str]) -> list[str]:
        others = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND c.relname <> %(v)s",
            {"s": schema, "v": view},
        ).scalar()
        drop_view = f"DROP VIEW IF EXISTS {quote(schema)}.{quote(view)}"
        return [drop_view] if others else [drop_view, f"DROP SCHEMA IF EXISTS {quote(schema)}"]

    @contextmanager
    def ddl_mutex(self, engine: sa.Engine, schema: str | None, table: str) -> Iterator[None]:
        # a session advisory lock (advisory locks are per database) keyed by the schema the server
        # resolves and the exact name, on a connection of its own, autocommit so it never holds a
        # transaction open while it waits
        key = "hashtextextended('shiftover-ddl:' || coalesce(%(s)s, current_schema()) || '.' || %(t)s, 0)"
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            take, release = f"SELECT true FROM pg_advisory_lock({key})", f"SELECT pg_advisory_unlock({key})"
            yield from held(conn, take, release, {"s": schema, "t": table})

    def sync_install(self, group: SyncGroup) -> list[str]:
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        new_changed = self.any_distinct(new, on_row(group.news, "OLD"))
        old_changed = self.any_distinct(old, on_row(group.olds, "OLD"))
        set_new = " ".join(f"{n} := {up};" for n, up in zip(new, group.ups, strict=True))
        set_old = " ".join(f"{o} := {down};" for o, down in zip(old, group.downs, strict=True))
        return self._trigger(
            group,
            "",
            f"""IF TG_OP = 'INSERT' THEN
    IF ({all_null(group.news)}) AND ({any_not_null(group.olds)}) THEN
      {set_new}
    ELSIF ({any_not_null(group.news)}) AND ({self.any_distinct(new, group.ups)}) THEN
      {set_old}
    END IF;
  ELSIF {new_changed} THEN
    IF {self.any_distinct(new, group.ups)} THEN
      {set_old}
    END IF;
  ELSIF {old_changed} THEN
    IF {self.any_distinct(old, group.downs)} THEN
      {set_new}
    END IF;
  END IF;""",
        )

    def _trigger(self, group: SyncGroup, suffix: str, branches: str) -> list[str]:
        """A BEFORE ROW trigger named after ``group`` (and ``suffix``) and its function, whose body runs
        ``branches`` unless the session turned the sync off, then returns ``NEW``."""
        fn = self._function(group, suffix)
        body = f"""
BEGIN
  IF current_setting('shiftover.sync_off', true) = 'on' THEN
    RETURN NEW;
  END IF;
  {branches}
  RETURN NEW;
END"""
        return [
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $so_sync${body}\n$so_sync$",
            # OR REPLACE (PostgreSQL 14+): a re-run takes ShareRowExclusiveLock, where DROP TRIGGER
            # would take AccessExclusiveLock and queue the application's reads too
            f"CREATE OR REPLACE TRIGGER {group.trigger_name(suffix)} BEFORE INSERT OR UPDATE ON {group.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def sync_remove(self, group: SyncGroup) -> list[str]:
        return [
            f"DROP TRIGGER IF EXISTS {group.trigger_name()} ON {group.table}",
            f"DROP FUNCTION IF EXISTS {self._function(group)}()",
        ]

    def trigger_names(self, pair_trigger: str) -> list[str]:
        return [pair_trigger]

    def sync_forward_install(self, group: SyncGroup) -> list[str]:
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        new_changed = self.any_distinct(new, on_row(group.news, "OLD"))
        old_changed = self.any_distinct(old, on_row(group.olds, "OLD"))
        set_new = " ".join(f"{n} := {up};" for n, up in zip(new, group.ups, strict=True))
        return self._trigger(
            group,
            self.FORWARD,
            f"""IF TG_OP = 'INSERT' THEN
    IF ({all_null(group.news)}) AND ({any_not_null(group.olds)}) THEN
      {set_new}
    END IF;
  ELSIF NOT ({new_changed}) AND ({old_changed}) THEN
    IF {self.any_distinct(new, group.ups)} THEN
      {set_new}
    END IF;
  END IF;""",
        )

    def sync_forward_remove(self, group: SyncGroup) -> list[str]:
        return [
            f"DROP TRIGGER IF EXISTS {group.trigger_name(self.FORWARD)} ON {group.table}",
            f"DROP FUNCTION IF EXISTS {self._function(group, self.FORWARD)}()",
        ]

    def sync_to_forward(self, group: SyncGroup) -> list[str]:
        # one transaction (run_ddl runs a step's statements together here): no other session sees a
        # moment with neither trigger, or with both. The drop comes first so the transaction takes
        # its AccessExclusiveLock at once (stop_sync's DROP NOT NULL, when there is one, took it
        # already): created first, the trigger's ShareRowExclusiveLock would be raised to it later,
        # behind the readers that came in between, one of which may then wait to write (a deadlock)
        return self.sync_remove(group) + self.sync_forward_install(group)

    def forward_trigger_names(self, pair_trigger: str) -> list[str]:
        return [f"{pair_trigger}_{self.FORWARD}"]

    def _function(self, group: SyncGroup, suffix: str = "") -> str:
        return group.trigger_name(suffix, qualified=True)  # beside the table, named after its trigger

    def begin_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(timeout_ms)}ms'")
        # the table lock is released at commit; without this, after the WAL flush, which took most
        # of the time the lock was held (bench/expand.py's profile: 9-11 ms median, 3-4 ms without)
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def flush_ddl(self, conn: sa.Connection) -> None:
        # a transaction that wrote WAL commits under the session's synchronous_commit: its flush
        # covers the DDL's commit record, written before it. An xid alone writes no WAL (its commit
        # was not flushed: checked on 15); a one-record logical message does, and needs no privilege.
        with conn.begin():
            conn.exec_driver_sql("SELECT pg_logical_emit_message(true, 'shiftover', 'ddl committed')")

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE

    def lock_holders(self, conn: sa.Connection, table: str, schema: str | None) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT DISTINCT a.pid, a.state, l.mode, left(coalesce(a.query, ''), 80) AS query, "
                "round(extract(epoch FROM now() - a.xact_start)::numeric, 1) AS seconds "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.relation = to_regclass(:t) AND a.pid <> pg_backend_pid() AND l.granted"
            ),
            {"t": f"{schema}.{table}" if schema else table},
        ).all()
        return [f"pid {r.pid} ({r.state}, {r.mode}, transaction open {r.seconds}s): {r.query}" for r in rows]

    def sync_off(self, conn: sa.Connection, *, session: bool = False) -> None:
        conn.exec_driver_sql(f"SET {'' if session else 'LOCAL '}shiftover.sync_off = 'on'")

    def sync_on(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("RESET shiftover.sync_off")
