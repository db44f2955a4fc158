"""MySQL/MariaDB: online ALTER (``ALGORITHM=INSTANT, LOCK=NONE``) with ``WAIT n``; BEFORE triggers.

An ALTER waiting for the table's metadata lock makes later queries wait behind it
(``Waiting for table metadata lock``) and ``lock_wait_timeout`` defaults to a day: every ALTER
carries ``WAIT <seconds>``, and CREATE/DROP TRIGGER run under ``SET SESSION lock_wait_timeout``;
both fail with error 1205, which is retried. Both take whole seconds only: ``WAIT 0.5`` is accepted
but read as ``WAIT 0``, that is NOWAIT (10.11: ``WAIT 0.5``/``0.9`` failed in 0.05 s against a held
lock, ``WAIT 1`` after 1.06 s, ``WAIT 1.5`` after 1.12 s; ``SET lock_wait_timeout = 0.5`` is refused
with 1232). So the server's bound is the timeout rounded up to whole seconds, and below or between
them ``MetadataLockWatchdog`` ends the wait at the spec's bound from a second connection.
DDL commits by itself here, so each statement is idempotent (IF [NOT] EXISTS). ADD and DROP
COLUMN are INSTANT on 10.11 (field notes); a refused INSTANT fails rather than copy the table.
A trigger may not write its own table (1442), so the triggers set ``NEW`` only; the backfill's
session sets ``@shiftover_sync_off`` to skip their work. stop_sync creates the forward-only triggers
(``<trigger>_fwd_ins``/``_fwd_upd``, old -> new only) before it drops the two-way ones: DDL commits
alone, so for a moment both run (10.11 takes several BEFORE triggers per event), never neither.
``CREATE OR REPLACE TRIGGER`` of one name is gapless under the table's metadata lock (10.11, a writer
checking each update's trigger effect: 0 of 320 writes missed over 300 replaces, where DROP then
CREATE missed 301 of 644), so a resumed stop_sync replacing the forward triggers loses nothing.

drop_old_columns: the forward triggers must go before the old columns (10.11: with a BEFORE UPDATE
trigger naming a dropped column, every UPDATE fails with 1054 "Unknown column ... in 'NEW'"), and
each drop commits alone, so an old-version write to an old column between them succeeded without
reaching the new column and was dropped with the column (the test saw 10 of 100 rows' last writes
lost in one round with no widening). The drops run under ``LOCK TABLES t WRITE`` ... ``UNLOCK
TABLES`` on one connection (``table_write_lock``, ``run_ddl``'s ``hold_table``): on 10.11 DROP
TRIGGER and ``ALTER ... DROP COLUMN ..., ALGORITHM=INSTANT, LOCK=NONE`` run under it and it survives
their implicit commits (a write issued meanwhile waited until UNLOCK, then failed with 1054). LOCK
TABLES waits for the metadata lock like an ALTER (queuing later queries behind it), under the same
``lock_wait_timeout`` and ``MetadataLockWatchdog`` bound, and the whole group is retried with backoff;
a failed attempt's ``UNLOCK TABLES`` (``end_ddl``: a rollback does not release it) keeps a pooled
connection from holding the table. Cost: readers block too, for the held span (trigger drops plus an
INSTANT column drop). ``bench/probe_mariadb_drop_lock.py``, 20k rows, a reader and a writer by key
with 1 ms gaps, worst call during the step, median/max over rounds: 10 rounds 14/91 ms (reader),
14/93 ms (writer) against 3/9 ms without the lock; 30 rounds on a busier machine 33/132 ms against
19/98 ms (before the step 3-5 ms medians). Left open: an attempt failing after its trigger drops
committed (unlikely to be a lock wait: the table is held by then) releases the lock with the
triggers gone and the columns still there, a window again until a retry or a re-run drops them.

Indexes: ``ADD [UNIQUE] INDEX ... ALGORITHM=INPLACE, LOCK=NONE`` (writers go on; field notes: 5.6 s
on 2M rows, 121 ms writer wait). NOT NULL: ``MODIFY`` with the column's own definition (read from
``SHOW CREATE TABLE``) plus NOT NULL, ``ALGORITHM=INPLACE, LOCK=NONE``: accepted on 10.11 (a table
rebuild, writers go on; strict ``sql_mode`` makes a NULL row fail it with 1265, so they are counted
first). It takes the exclusive metadata lock at its start and again at its end, to apply the
writes made meanwhile. While the 500 ms bound was NOWAIT (above), any write in flight at either
moment failed the attempt and the whole rebuild was lost: under a steady writer to an indexed column
at 300k rows, 4 to 14 attempts and 4.0 to 34.8 s, once 12 failed attempts in a row (earlier runs: 27
time-outs and 102 s, and 288 s). Waiting up to the bound, it took 1 attempt of about 3 s, the
writer's worst wait 68-78 ms (``bench/probe_mariadb_not_null.py``), so a long rebuild is not
thrown away for a write of a few milliseconds. The definition is edited outside its quoted text
(a COMMENT or DEFAULT may say NOT NULL). A TIMESTAMP is refused: 10.11 answers 1846 to INPLACE
for it, with or without a DEFAULT. CHECK: refused, since MariaDB adds one only with
``ALGORITHM=COPY`` (10.11 answers 1845 to INPLACE and to NOCOPY), which blocks every writer while
it copies the table. Foreign key: INPLACE only with ``foreign_key_checks`` off for the ALTER (10.11
answers 1846 otherwise, "Adding foreign keys needs foreign_key_checks=OFF"), so existing rows are
not checked by the server: the caller counts orphans before and again after (new writes are checked
from the ALTER on). Without an index on the columns the ALTER builds one that outlives a DROP
FOREIGN KEY, so the preflight asks for one.

rename_table: the view cannot follow ``RENAME TABLE`` in one transaction (each DDL commits alone;
in 30 rename/rollback cycles done that way under two writers through the old name, 220 of 1335
writes failed with 1146). It is built first and swapped in by one multi-table ``RENAME TABLE``,
atomic on 10.11 (a failing pair leaves every name as it was) and able to rename views. A view must
name an existing table (1146), so a placeholder view under the new name (over the table: writes
through it reach the table; marked by a constant WHERE) lets the staging view be created over the
new name, then ``RENAME TABLE new TO parked, old TO new, staging TO old`` swaps, and the
placeholder goes. A statement queued behind the swap's metadata lock opens its name again once it
has the lock: a queued INSERT through the old name went into the view (and after the rollback's
swap, the table); 0 of 1458 writes failed in 30 cycles. ``RENAME TABLE ... WAIT n`` takes whole
seconds (``WAIT 0.5`` gave up at once), so the session's ``lock_wait_timeout`` bounds the swap.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa

from shiftover.schema.engines import (
    LockWaitGuard,
    SchemaDialect,
    SyncGroup,
    TableRename,
    all_null,
    any_not_null,
    held,
    on_row,
)

LOCK_WAIT_TIMEOUT = 1205
_FOREVER_S = 365 * 86_400  # GET_LOCK's wait: as long as the DDL in flight runs
PLACEHOLDER = "shiftover rename_table placeholder"
REFUSED = {
    "add_check": "MariaDB adds a CHECK constraint only with ALGORITHM=COPY (INPLACE and NOCOPY answer "
    "error 1845): the copy holds a lock that blocks every write to the table until the whole table is "
    "copied. Enforce it in the application, or run it in a maintenance window outside Shiftover",
}


class MySQLSchema(SchemaDialect):
    name = "mysql"

    def distinct(self, a: str, b: str) -> str:
        """``<=>`` follows the collation: under the default ``utf8mb4_general_ci`` it holds 'Ada'
        equal to 'ada' and to 'Ada ' (checked on 10.11), so a write changing only letter case would
        not reach the other side and validation would pass it. Two strings are compared by their
        bytes too (both in utf8mb4); a number or date (``CHARSET()`` 'binary') only by value, so
        150 and 150.00 stay equal."""
        both_text = f"CHARSET({a}) <> 'binary' AND CHARSET({b}) <> 'binary'"
        exact = f"BINARY CONVERT({a} USING utf8mb4) <=> BINARY CONVERT({b} USING utf8mb4)"
        return f"(NOT ({a} <=> {b}) OR ({a} IS NOT NULL AND {b} IS NOT NULL AND {both_text} AND NOT ({exact})))"

    def typed(self, value: str, type_: str) -> str:
        # CAST takes a few type names only (SIGNED, DECIMAL, CHAR...), not a column's type: the
        # value stays untyped, and a bad column type is refused by its ADD COLUMN.
        return value

    def bound(self, param: str, type_: str) -> str:
        # a decimal is rounded to its scale when stored (12.345 into DECIMAL(12,2) is 12.35, a note
        # even in strict mode), so its expressions read it cast as the column stores it; CAST takes
        # no other column type
        decimal = _DECIMAL.fullmatch(type_.strip())
        return f"CAST({param} AS DECIMAL{decimal.group(1) or ''})" if decimal else param

    def add_column(self, table: str, column: str, type_: str, default: str | None, timeout_ms: int) -> str:
        default_sql = f" DEFAULT {default}" if default is not None else ""
        return (
            f"ALTER TABLE {table} {_wait(timeout_ms)} ADD COLUMN IF NOT EXISTS {column} {type_} NULL"
            f"{default_sql}, ALGORITHM=INSTANT, LOCK=NONE"
        )

    def drop_column(self, table: str, column: str, timeout_ms: int) -> str:
        wait = _wait(timeout_ms)
        return f"ALTER TABLE {table} {wait} DROP COLUMN IF EXISTS {column}, ALGORITHM=INSTANT, LOCK=NONE"

    def online_refusal(self, op: str) -> str | None:
        return REFUSED.get(op)

    def create_index(self, table: str, name: str, columns: Sequence[str], unique: bool, timeout_ms: int) -> str:
        unique_sql = "UNIQUE " if unique else ""
        return (
            f"ALTER TABLE {table} {_wait(timeout_ms)} ADD {unique_sql}INDEX IF NOT EXISTS {name} "
            f"({', '.join(columns)}), ALGORITHM=INPLACE, LOCK=NONE"
        )

    def drop_index(self, table: str, name: str, timeout_ms: int) -> str:
        return f"ALTER TABLE {table} {_wait(timeout_ms)} DROP INDEX IF EXISTS {name}, ALGORITHM=INPLACE, LOCK=NONE"

    def set_not_null(
        self, conn: sa.Connection, table: str, column: str, helper: str, helper_exists: bool, timeout_ms: int
    ) -> list[list[str]]:
        definition = _column_definition(conn, table, column)
        if _keyword(definition, _NOT_NULL):
            return []
        # a nullable column prints DEFAULT NULL (and a TIMESTAMP a bare NULL): both go, NOT NULL comes
        definition = _drop_keyword(_drop_keyword(definition, _DEFAULT_NULL), _BARE_NULL) + " NOT NULL"
        return [[self._modify(table, definition, timeout_ms)]]

    def drop_not_null(self, conn: sa.Connection, table: str, column: str, helper: str, timeout_ms: int) -> list[str]:
        return self.make_nullable(conn, table, column, timeout_ms)

    def make_nullable(self, conn: sa.Connection, table: str, column: str, timeout_ms: int) -> list[str]:
        # 10.11 answers 1845 to INSTANT and NOCOPY for NOT NULL -> NULL (instant only for ROW_FORMAT=
        # REDUNDANT): an online rebuild like set_not_null's, writers going on
        definition = _column_definition(conn, table, column)
        found = _keyword(definition, _NOT_NULL)
        if found is None:
            return []
        return [self._modify(table, definition[: found.start()] + " NULL" + definition[found.end() :], timeout_ms)]

    def not_null_refusal(self, type_: str) -> str | None:
        if type_.split("(")[0].strip().upper() != "TIMESTAMP":
            return None
        return (
            "MariaDB makes a TIMESTAMP column NOT NULL only with ALGORITHM=COPY (10.11 answers error 1846 "
            "'cannot convert NULL to non-constant DEFAULT' to INPLACE, with or without a DEFAULT), which "
            "blocks every write while it copies the table. Change it to DATETIME first, or enforce it in "
            "the application"
        )

    def _modify(self, table: str, definition: str, timeout_ms: int) -> str:
        return f"ALTER TABLE {table} {_wait(timeout_ms)} MODIFY {definition}, ALGORITHM=INPLACE, LOCK=NONE"

    foreign_key_needs_index = True

    def add_foreign_key(
        self, table: str, name: str, columns: Sequence[str], ref_table: str, ref_columns: Sequence[str], timeout_ms: int
    ) -> list[list[str]]:
        cols, refs = ", ".join(columns), ", ".join(ref_columns)
        return [
            [
                f"SET STATEMENT foreign_key_checks = 0 FOR ALTER TABLE {table} {_wait(timeout_ms)} "
                f"ADD CONSTRAINT {name} FOREIGN KEY IF NOT EXISTS ({cols}) REFERENCES {ref_table} ({refs}), "
                "ALGORITHM=INPLACE, LOCK=NONE"
            ]
        ]

    def foreign_key_name_taken(self, conn: sa.Connection, name: str) -> bool:
        found = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.referential_constraints "
                "WHERE constraint_schema = database() AND constraint_name = :n"
            ),
            {"n": name},
        ).scalar()
        return bool(found)  # database-wide: 10.11 answers 1823 to a second one

    def drop_foreign_key(self, table: str, name: str, timeout_ms: int) -> str:
        wait = _wait(timeout_ms)
        return f"ALTER TABLE {table} {wait} DROP FOREIGN KEY IF EXISTS {name}, ALGORITHM=INPLACE, LOCK=NONE"

    def rename_table(self, names: TableRename) -> list[str]:
        return [
            f"CREATE OR REPLACE ALGORITHM=MERGE VIEW {names.new_table} AS SELECT * FROM {names.table} "
            f"WHERE '{PLACEHOLDER}' IS NOT NULL",
            f"CREATE OR REPLACE ALGORITHM=MERGE VIEW {names.staging} AS SELECT * FROM {names.new_table}",
            f"RENAME TABLE {names.new_table} TO {names.parked}, {names.table} TO {names.new_table}, "
            f"{names.staging} TO {names.table}",
            self.drop_view(names.parked),
        ]

    def unrename_table(self, names: TableRename) -> list[str]:
        return [
            f"RENAME TABLE {names.table} TO {names.staging}, {names.new_table} TO {names.table}",
            self.drop_view(names.staging),
            self.drop_view(names.parked),  # left if the rename was killed before dropping it
        ]

    def rename_leftovers(self, conn: sa.Connection, names: TableRename) -> list[str]:
        drops = [self.drop_view(names.staging), self.drop_view(names.parked)]
        return drops + ([self.drop_view(names.new_table)] if self.is_rename_placeholder(conn, names) else [])

    def is_rename_placeholder(self, conn: sa.Connection, names: TableRename) -> bool:
        found = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.views WHERE table_schema = coalesce(:s, database()) "
                "AND table_name = :n AND view_definition LIKE :m"
            ),
            {"s": names.schema, "n": names.to, "m": f"%'{PLACEHOLDER}' is not null"},
        ).scalar()
        return bool(found)

    def current_schema(self, conn: sa.Connection) -> str:
        return str(conn.exec_driver_sql("SELECT DATABASE()").scalar())

    def version_view(self, schema: str, view: str, table: str, columns: Sequence[str]) -> list[str]:
        # MariaDB has no search_path: the version is a database the new code connects to. A view with
        # one table and plain columns is updatable (MERGE); an INSERT leaving out the old NOT NULL column
        # goes through, the BEFORE trigger filling it (checked on 10.11)
        return [
            f"CREATE DATABASE IF NOT EXISTS {schema}",
            f"CREATE OR REPLACE ALGORITHM=MERGE VIEW {schema}.{view} AS SELECT {', '.join(columns)} FROM {table}",
        ]

    def version_schema_exists(self, conn: sa.Connection, schema: str) -> bool:
        query = "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %(s)s"
        return bool(conn.exec_driver_sql(query, {"s": schema}).scalar())

    def drop_version_view(self, conn: sa.Connection, schema: str, view: str, quote: Callable[[str], str]) -> list[str]:
        others = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %(s)s AND TABLE_NAME <> %(v)s)"
            " + (SELECT count(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %(s)s)"
            " + (SELECT count(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %(s)s)",
            {"s": schema, "v": view},
        ).scalar()
        drop_view = f"DROP VIEW IF EXISTS {quote(schema)}.{quote(view)}"
        return [drop_view] if others else [drop_view, f"DROP DATABASE IF EXISTS {quote(schema)}"]

    @contextmanager
    def ddl_mutex(self, engine: sa.Engine, schema: str | None, table: str) -> Iterator[None]:
        # GET_LOCK names are server-wide and at most 64 characters: a digest of the database and the
        # table as the server folds them (lower_case_table_names)
        name = "CONCAT(COALESCE(%(s)s, DATABASE()), '.', %(t)s)"
        key = f"CONCAT('shiftover-ddl:', LEFT(SHA2(IF(@@lower_case_table_names, LOWER({name}), {name}), 256), 40))"
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            take, release = f"SELECT GET_LOCK({key}, %(w)s)", f"SELECT RELEASE_LOCK({key})"
            yield from held(conn, take, release, {"s": schema, "t": table, "w": _FOREVER_S})

    def sync_install(self, group: SyncGroup) -> list[str]:
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        set_new = " ".join(f"SET {n} = {up};" for n, up in zip(new, group.ups, strict=True))
        set_old = " ".join(f"SET {o} = {down};" for o, down in zip(old, group.downs, strict=True))
        insert = f"""BEGIN
  IF @shiftover_sync_off IS NULL THEN
    IF ({all_null(group.news)}) AND ({any_not_null(group.olds)}) THEN
      {set_new}
    ELSEIF ({any_not_null(group.news)}) AND ({self.any_distinct(new, group.ups)}) THEN
      {set_old}
    END IF;
  END IF;
END"""
        update = f"""BEGIN
  IF @shiftover_sync_off IS NULL THEN
    IF {self.any_distinct(new, on_row(group.news, "OLD"))} THEN
      IF {self.any_distinct(new, group.ups)} THEN
        {set_old}
      END IF;
    ELSEIF {self.any_distinct(old, on_row(group.olds, "OLD"))} THEN
      IF {self.any_distinct(old, group.downs)} THEN
        {set_new}
      END IF;
    END IF;
  END IF;
END"""
        ins, upd = (group.trigger_name(s, qualified=True) for s in ("ins", "upd"))
        return [
            f"CREATE OR REPLACE TRIGGER {ins} BEFORE INSERT ON {group.table} FOR EACH ROW {insert}",
            f"CREATE OR REPLACE TRIGGER {upd} BEFORE UPDATE ON {group.table} FOR EACH ROW {update}",
        ]

    def sync_remove(self, group: SyncGroup) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {group.trigger_name(s, qualified=True)}" for s in ("ins", "upd")]

    def trigger_names(self, pair_trigger: str) -> list[str]:
        return [f"{pair_trigger}_ins", f"{pair_trigger}_upd"]

    def sync_forward_install(self, group: SyncGroup) -> list[str]:
        # the default sync_to_forward order (each DDL commits alone here): created before the two-way
        # triggers are dropped, both BEFORE triggers of an event run for a moment (10.11 allows several
        # per event), never neither
        new, old = on_row(group.news, "NEW"), on_row(group.olds, "NEW")
        set_new = " ".join(f"SET {n} = {up};" for n, up in zip(new, group.ups, strict=True))
        insert = f"""BEGIN
  IF @shiftover_sync_off IS NULL THEN
    IF ({all_null(group.news)}) AND ({any_not_null(group.olds)}) THEN
      {set_new}
    END IF;
  END IF;
END"""
        update = f"""BEGIN
  IF @shiftover_sync_off IS NULL THEN
    IF NOT ({self.any_distinct(new, on_row(group.news, "OLD"))})
        AND ({self.any_distinct(old, on_row(group.olds, "OLD"))}) THEN
      IF {self.any_distinct(new, group.ups)} THEN
        {set_new}
      END IF;
    END IF;
  END IF;
END"""
        ins, upd = (group.trigger_name(f"{self.FORWARD}_{s}", qualified=True) for s in ("ins", "upd"))
        return [
            f"CREATE OR REPLACE TRIGGER {ins} BEFORE INSERT ON {group.table} FOR EACH ROW {insert}",
            f"CREATE OR REPLACE TRIGGER {upd} BEFORE UPDATE ON {group.table} FOR EACH ROW {update}",
        ]

    def sync_forward_remove(self, group: SyncGroup) -> list[str]:
        names = (group.trigger_name(f"{self.FORWARD}_{s}", qualified=True) for s in ("ins", "upd"))
        return [f"DROP TRIGGER IF EXISTS {n}" for n in names]

    def forward_trigger_names(self, pair_trigger: str) -> list[str]:
        return [f"{pair_trigger}_{self.FORWARD}_ins", f"{pair_trigger}_{self.FORWARD}_upd"]

    def table_write_lock(self, table: str) -> tuple[str, str] | None:
        # taken under the session's lock_wait_timeout and MetadataLockWatchdog like any DDL; DROP
        # TRIGGER and ALTER TABLE run under it and it survives their implicit commits (10.11)
        return f"LOCK TABLES {table} WRITE", "UNLOCK TABLES"

    def begin_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {_whole_seconds(timeout_ms)}")

    def end_ddl(self, conn: sa.Connection) -> None:
        # a failed attempt under table_write_lock must not go back to the pool holding the table:
        # a rollback does not release LOCK TABLES, UNLOCK TABLES does (and is a no-op without one)
        conn.exec_driver_sql("UNLOCK TABLES")
        conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")

    def guard_lock_wait(self, conn: sa.Connection, timeout_ms: int) -> LockWaitGuard:
        return LockWaitGuard() if timeout_ms % 1000 == 0 else MetadataLockWatchdog(conn, timeout_ms)

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        args: tuple[object, ...] = tuple(getattr(error.orig, "args", ()))
        return len(args) > 0 and args[0] == LOCK_WAIT_TIMEOUT

    def lock_holders(self, conn: sa.Connection, table: str, schema: str | None) -> list[str]:
        rows = conn.execute(
            sa.text(
                "SELECT p.id, p.command, p.time, left(coalesce(p.info, ''), 80) AS info, t.trx_started "
                "FROM information_schema.processlist p "
                "LEFT JOIN information_schema.innodb_trx t ON t.trx_mysql_thread_id = p.id "
                "WHERE p.id <> connection_id() AND p.db = coalesce(:s, database()) "
                "AND (t.trx_id IS NOT NULL OR p.command <> 'Sleep')"
            ),
            {"s": schema},
        ).all()
        return [
            f"connection {r.id} ({r.command} {r.time}s"
            + (f", transaction open since {r.trx_started}" if r.trx_started else "")
            + f"): {r.info}"
            for r in rows
        ]

    def sync_off(self, conn: sa.Connection, *, session: bool = False) -> None:
        conn.exec_driver_sql("SET @shiftover_sync_off = 1")

    def sync_on(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET @shiftover_sync_off = NULL")


def _whole_seconds(timeout_ms: int) -> int:
    """The server's bound: ``lock_wait_timeout`` and ``WAIT n`` take whole seconds, and ``WAIT 0.5``
    is read as ``WAIT 0`` (NOWAIT; checked on 10.11), so round up; ``MetadataLockWatchdog`` cuts at
    the spec's own bound."""
    return max(1, math.ceil(timeout_ms / 1000))


def _wait(timeout_ms: int) -> str:
    return f"WAIT {_whole_seconds(timeout_ms)}"


class MetadataLockWatchdog(LockWaitGuard):
    """Ends a lock wait of the watched session once it may have lasted ``timeout_ms`` (``KILL
    QUERY`` from a second connection, opened before the statement starts): the bound the server
    cannot express below a second or between whole seconds. Only waits are cut (processlist state
    ``Waiting for ... lock``): a table rebuild in progress is left alone. A wait is timed from the
    last poll that saw none, so a poll delayed on a busy machine cuts it early, never late."""

    def __init__(self, conn: sa.Connection, timeout_ms: int) -> None:
        self.conn, self.timeout = conn, timeout_ms / 1000
        self.poll = min(0.02, self.timeout / 10)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.target = 0
        self.watcher: sa.Connection | None = None

    def __enter__(self) -> MetadataLockWatchdog:
        self.target = int(self.conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
        try:
            self.watcher = self.conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError:
            return self  # the statement's own WAIT still bounds it, at whole seconds
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.watcher is not None:
            if self.thread.is_alive():
                self.thread.join()
            self.watcher.close()

    def _watch(self) -> None:
        assert self.watcher is not None
        state_sql = sa.text("SELECT state FROM information_schema.processlist WHERE id = :id")
        clear = time.monotonic()  # no wait yet: the statement starts after this
        try:
            while not self.stop.wait(self.poll):
                asked = time.monotonic()
                state = str(self.watcher.execute(state_sql, {"id": self.target}).scalar() or "")
                if not (state.startswith("Waiting for") and state.endswith(" lock")):
                    clear = asked
                elif time.monotonic() - clear >= self.timeout - self.poll:
                    self.watcher.exec_driver_sql(f"KILL QUERY {self.target}")
                    self.fired = True
                    return
        except sa.exc.DBAPIError:
            return  # the statement's own WAIT still bounds it, at whole seconds


_NOT_NULL = re.compile(r" NOT NULL\b", re.IGNORECASE)
# a decimal column's type as SQLAlchemy spells it (its precision and scale kept for the CAST)
_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*(\(\s*\d+\s*(?:,\s*\d+\s*)?\))?(?:\s+UNSIGNED)?(?:\s+ZEROFILL)?", re.I)
_DEFAULT_NULL = re.compile(r" DEFAULT NULL\b", re.IGNORECASE)
_BARE_NULL = re.compile(r"(?<!NOT)(?<!DEFAULT) NULL\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`")


def _keyword(definition: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """``pattern``'s first match in ``definition`` outside quoted text: a COMMENT, a string DEFAULT
    or a backquoted name saying "NOT NULL" is not the column's nullability."""
    masked = _QUOTED.sub(lambda quoted: " " * len(quoted.group()), definition)
    return pattern.search(masked)


def _drop_keyword(definition: str, pattern: re.Pattern[str]) -> str:
    found = _keyword(definition, pattern)
    return definition if found is None else definition[: found.start()] + definition[found.end() :]


def _column_definition(conn: sa.Connection, table: str, column: str) -> str:
    """``column``'s line of ``SHOW CREATE TABLE`` (type, charset, default, comment), without its comma."""
    create = str(conn.exec_driver_sql(f"SHOW CREATE TABLE {table}").one()[1])
    for line in create.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith(f"{column} ") or line.startswith(f"`{column.strip('`')}` "):
            return line
    raise LookupError(f"no column {column} in {table}")
