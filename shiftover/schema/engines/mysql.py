"""MySQL/MariaDB: online ALTER (``ALGORITHM=INSTANT, LOCK=NONE``) with ``WAIT n``; BEFORE triggers.

An ALTER waiting for the table's metadata lock makes later queries wait behind it
(``Waiting for table metadata lock``) and ``lock_wait_timeout`` defaults to a day: every ALTER
carries ``WAIT <seconds>`` (fractions accepted, checked on 10.11), and CREATE/DROP TRIGGER run under
``SET SESSION lock_wait_timeout`` (whole seconds, at least 1). Both fail with error 1205, which is
retried. DDL commits by itself here, so each statement is idempotent (IF [NOT] EXISTS). ADD and DROP
COLUMN are INSTANT on 10.11 (field notes); a refused INSTANT fails rather than copy the table.
A trigger may not write its own table (1442), so the triggers set ``NEW`` only; the backfill's
session sets ``@shiftover_sync_off`` to skip their work.

Indexes: ``ADD [UNIQUE] INDEX ... ALGORITHM=INPLACE, LOCK=NONE`` (writers go on; field notes: 5.6 s
on 2M rows, 121 ms writer wait). NOT NULL: ``MODIFY`` with the column's own definition (read from
``SHOW CREATE TABLE``) plus NOT NULL, ``ALGORITHM=INPLACE, LOCK=NONE``: accepted on 10.11 (a table
rebuild, writers go on; strict ``sql_mode`` makes a NULL row fail it with 1265, so they are counted
first). Its end needs the exclusive metadata lock while it applies the writes made meanwhile: under
a steady writer to an indexed column it hit the 500 ms ``WAIT`` again and again (measured at 300k
rows on a loaded machine: 6 time-outs and 7.7 s in one run, 27 time-outs and 102 s in another, 288 s
in a third; one attempt of 1.0 s with a 3 s bound, or without that index), so budget attempts for
it. The definition is edited outside its quoted text (a COMMENT or DEFAULT may say NOT NULL). A
TIMESTAMP is refused: 10.11 answers 1846 to INPLACE for it, with or without a DEFAULT. CHECK:
refused, since MariaDB adds one only with ``ALGORITHM=COPY`` (10.11 answers 1845 to INPLACE and to
NOCOPY), which blocks every writer while it copies the table. Foreign key: INPLACE
only with ``foreign_key_checks`` off for the ALTER (10.11 answers 1846 otherwise, "Adding foreign
keys needs foreign_key_checks=OFF"), so existing rows are not checked by the server: the caller
counts orphans before and again after (new writes are checked from the ALTER on). Without an index
on the columns the ALTER builds one that outlives a DROP FOREIGN KEY, so the preflight asks for one.

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
from collections.abc import Sequence

import sqlalchemy as sa

from shiftover.schema.engines import SchemaDialect, SyncGroup, TableRename, all_null, any_not_null, on_row

LOCK_WAIT_TIMEOUT = 1205
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

    def add_column(self, table: str, column: str, type_: str, default: str | None, timeout_ms: int) -> str:
        default_sql = f" DEFAULT {default}" if default is not None else ""
        return (
            f"ALTER TABLE {table} WAIT {timeout_ms / 1000:g} ADD COLUMN IF NOT EXISTS {column} {type_} NULL"
            f"{default_sql}, ALGORITHM=INSTANT, LOCK=NONE"
        )

    def drop_column(self, table: str, column: str, timeout_ms: int) -> str:
        wait = f"WAIT {timeout_ms / 1000:g}"
        return f"ALTER TABLE {table} {wait} DROP COLUMN IF EXISTS {column}, ALGORITHM=INSTANT, LOCK=NONE"

    def online_refusal(self, op: str) -> str | None:
        return REFUSED.get(op)

    def create_index(self, table: str, name: str, columns: Sequence[str], unique: bool, timeout_ms: int) -> str:
        unique_sql = "UNIQUE " if unique else ""
        return (
            f"ALTER TABLE {table} WAIT {timeout_ms / 1000:g} ADD {unique_sql}INDEX IF NOT EXISTS {name} "
            f"({', '.join(columns)}), ALGORITHM=INPLACE, LOCK=NONE"
        )

    def drop_index(self, table: str, name: str, timeout_ms: int) -> str:
        return (
            f"ALTER TABLE {table} WAIT {timeout_ms / 1000:g} DROP INDEX IF EXISTS {name}, ALGORITHM=INPLACE, LOCK=NONE"
        )

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
        return f"ALTER TABLE {table} WAIT {timeout_ms / 1000:g} MODIFY {definition}, ALGORITHM=INPLACE, LOCK=NONE"

    foreign_key_needs_index = True

    def add_foreign_key(
        self, table: str, name: str, columns: Sequence[str], ref_table: str, ref_columns: Sequence[str], timeout_ms: int
    ) -> list[list[str]]:
        cols, refs = ", ".join(columns), ", ".join(ref_columns)
        return [
            [
                f"SET STATEMENT foreign_key_checks = 0 FOR ALTER TABLE {table} WAIT {timeout_ms / 1000:g} "
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
        wait = f"WAIT {timeout_ms / 1000:g}"
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

    def begin_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {max(1, math.ceil(timeout_ms / 1000))}")

    def end_ddl(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")

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

    def sync_off(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET @shiftover_sync_off = 1")

    def sync_on(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET @shiftover_sync_off = NULL")


_NOT_NULL = re.compile(r" NOT NULL\b", re.IGNORECASE)
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
