"""SQLite: WAL files shared with a live application, Python functions for the diff's hashing,
and values stored by SQLAlchemy's own conventions (dates as text, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Engine

from shiftover.capture.triggers import CaptureNames, quote
from shiftover.diff.normalize import SEP, ColumnRule, register_sqlite_functions, rule_code
from shiftover.engines import Convert, EngineDialect, Key, ordered_row_texts, run_sample, upsert_on_conflict
from shiftover.spec import ValidationSpec

if TYPE_CHECKING:
    from shiftover.diff.checksum import Side
    from shiftover.mapping import TableMapping


class SQLite(EngineDialect):
    name = "sqlite"
    names = frozenset({"sqlite"})
    row_value_compare = True
    client_side_autocommit = True
    update_returning = True
    native_text = "CAST({} AS TEXT)"
    native_kinds = frozenset({"integer", "text"})

    def absolute_url(self, url: URL) -> URL:
        """A relative file path made absolute against the working directory."""
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:") or Path(path).is_absolute():
            return url
        return url.set(database=str(Path(path).resolve()))

    def create_engine(self, url: URL) -> Engine:
        """WAL and a busy timeout, so the flows and a live application can share the file."""
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine

    def prepare_hash_session(self, conn: sa.Connection) -> None:
        register_sqlite_functions(conn.connection.driver_connection)

    def begin_undoable(self, conn: sa.Connection) -> None:
        # pysqlite begins only before DML: a SAVEPOINT would otherwise open the transaction itself,
        # and its RELEASE would commit it
        conn.exec_driver_sql("BEGIN")

    def upsert(self, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> Any:
        return upsert_on_conflict(sqlite.insert, table, rows, key)

    def sample_keys(self, engine: Engine, table: sa.Table, key: Sequence[str], total: int, wanted: int) -> list[Key]:
        cols = [table.c[k] for k in key]
        threshold = int(min(1.0, wanted / max(total, 1)) * 1_000_000)
        query = sa.select(*cols).where(sa.func.abs(sa.func.random()) % 1_000_000 < threshold).order_by(*cols)
        return run_sample(engine, query)

    def bulk_writer(self, engine: Engine, mapping: TableMapping, table: sa.Table, session: Any = None) -> Any:
        from shiftover.backfill.sqlite import SQLiteWriter

        return SQLiteWriter(engine, mapping, table, session)

    def storage_step(self, target_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Convert | None:
        """SQLite's storage conventions (dates as text...), JSON excepted (it arrives as text)."""
        return None if isinstance(target_type, sa.JSON) else target_type.bind_processor(dialect)

    # -- diff: the rules run in Python (register_sqlite_functions) -------------------------
    def canonical_sql(self, rule: ColumnRule, own: str, x: str, col_type: Any, o: ValidationSpec) -> str:
        if rule.kind == "integer":
            return f"CAST({x} AS TEXT)"
        if rule.kind == "text" and not rule.pad:
            return f"CAST({x} AS TEXT)"
        if rule.kind == "binary":
            return f"lower(hex({x}))"
        return f"so_norm('{rule_code(rule, o)}', {x})"

    def may_null_text(self, kind: str) -> bool:
        return True  # every value goes through Python, which may answer None

    def row_text(self, texts: list[str]) -> str:
        return f" || '{SEP}' || ".join(texts)

    def row_hash(self, text: str, fast_hash: bool) -> tuple[str, str]:
        row_hash = f"so_hash60({text})"
        return row_hash, f"so_sum({row_hash})"

    def digest_query(self, side: Side, where: Sequence[Any]) -> sa.Select[Any]:
        rows = ordered_row_texts(side, where)
        digest = sa.func.so_digest(rows.c.t)  # a Python aggregate, fed in the subquery's order
        return sa.select(sa.func.count(), digest).select_from(rows)

    def key_hash_list(self, key: str, text: str) -> str:
        return f"group_concat(CAST({key} AS TEXT) || ':' || so_md5({text}), ',')"

    # -- capture, expectations -------------------------------------------------------------
    def capture_install_ddl(self, d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
        log, table = quote(d, n.changelog), quote(d, n.table)
        new_key = ", ".join(f"NEW.{quote(d, k)}" for k in key)
        old_key = ", ".join(f"OLD.{quote(d, k)}" for k in key)
        same_key = " AND ".join(f"OLD.{quote(d, k)} IS NEW.{quote(d, k)}" for k in key)

        def trig(suffix: str) -> str:
            return quote(d, f"{n.trigger}_{suffix}")

        return [
            f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, "
            "key_json TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
            *(f"DROP TRIGGER IF EXISTS {trig(s)}" for s in ("ins", "upd", "del")),
            f"CREATE TRIGGER {trig('ins')} AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO {log} (op, key_json) VALUES ('I', json_array({new_key})); END",
            f"CREATE TRIGGER {trig('upd')} AFTER UPDATE ON {table} BEGIN "
            f"INSERT INTO {log} (op, key_json) SELECT 'D', json_array({old_key}) WHERE NOT ({same_key}); "
            f"INSERT INTO {log} (op, key_json) VALUES ('U', json_array({new_key})); END",
            f"CREATE TRIGGER {trig('del')} AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {log} (op, key_json) VALUES ('D', json_array({old_key})); END",
        ]

    def capture_remove_ddl(self, d: sa.Dialect, n: CaptureNames) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {quote(d, f'{n.trigger}_{s}')}" for s in ("ins", "upd", "del")]

    def same_server(self, a: sa.Connection, b: sa.Connection, token: str) -> bool:
        return _file_id(a) == _file_id(b)

    def table_identity(self, conn: sa.Connection, schema: str | None, table: str) -> tuple[Any, ...] | None:
        """The database file (device and inode: one file under any path or link) and the table's
        own spelling in it (SQLite folds names case-insensitively)."""
        row = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'table' AND name = :t COLLATE NOCASE"), {"t": table}
        ).first()
        return None if row is None else ("sqlite", _file_id(conn), str(row[0]).lower())

    def gx_datasource(self, ctx: Any, url: str) -> Any:
        return ctx.data_sources.add_sqlite(name="target", connection_string=url)


def _file_id(conn: sa.Connection) -> tuple[int, int] | str:
    """The main database file's device and inode; an in-memory database is its own connection."""
    import os

    path = conn.execute(sa.text("SELECT file FROM pragma_database_list WHERE name = 'main'")).scalar()
    if not path:
        return f"memory:{id(conn.connection.dbapi_connection)}"
    st = os.stat(path)
    return (st.st_dev, st.st_ino)
