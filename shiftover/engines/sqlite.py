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
from shiftover.diff.normalize import ROW_SEP, SEP, ColumnRule, register_sqlite_functions, rule_code
from shiftover.engines import Convert, EngineDialect, Key, ordered_row_texts, run_sample, upsert_on_conflict
from shiftover.spec import ValidationSpec

if TYPE_CHECKING:
    from shiftover.diff.checksum import Side
    from shiftover.mapping import TableMapping


class SQLite(EngineDialect):
    name = "sqlite"
    names = frozenset({"sqlite"})
    row_value_compare = True
    casts_json_binds = False  # CAST(x AS JSON) is numeric affinity here: JSON text is bound as it is
    shared_store = False  # one file on one machine
    client_side_autocommit = True
    update_returning = True
    native_text = "CAST({} AS TEXT)"
    native_kinds = frozenset({"integer", "text"})
    # In-process queries cost next to nothing each, while a differing segment is hashed again row
    # by row in Python (so_hash_sum): smaller segments narrow less. The demo's 100k orders with
    # 10 changed rows: 2.7 s CPU in 16 segments, 2.1 s in 64.
    segment_rows = 2_048

    def store_clock(self) -> sa.ColumnElement[float]:
        # 'now' is one value per statement; julianday keeps milliseconds
        return (sa.func.julianday("now") - 2440587.5) * 86400.0

    def absolute_url(self, url: URL) -> URL:
        """A relative file path made absolute against the working directory."""
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:") or Path(path).is_absolute():
            return url
        return url.set(database=str(Path(path).resolve()))

    def may_exist(self, url: URL) -> bool:
        """A file database exists when its file does (connecting would create it); memory never."""
        path = url.database
        if not path or path == ":memory:":
            return False
        return path.startswith("file:") or Path(path).exists()

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

    def portable_type(self, generic: sa.types.TypeEngine[Any], is_key: bool) -> sa.types.TypeEngine[Any]:
        if isinstance(generic, sa.Interval | sa.ARRAY):
            return sa.types.NullType()  # no such type here: the rehearsal refuses the column
        return generic

    def storage_step(self, target_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Convert | None:
        """SQLite's storage conventions (dates as text...), JSON excepted (it arrives as text).

        The dialect's own type does the work: a reflected column's generic ``DATETIME`` has no bind
        processor, so values fell to sqlite3's adapter, which writes 09:43:24 where SQLAlchemy (and so
        every application and dual-written row) writes 09:43:24.000000."""
        if isinstance(target_type, sa.JSON):
            return None
        return target_type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]

    # -- diff: SQL where it renders the Python twin's text exactly, else the twin itself ------
    def canonical_sql(self, rule: ColumnRule, own: str, x: str, col_type: Any, o: ValidationSpec) -> str:
        if rule.kind == "integer":
            return f"CAST({x} AS TEXT)"
        if rule.kind == "text" and not rule.pad:
            return f"CAST({x} AS TEXT)"
        if rule.kind == "binary":
            return f"lower(hex({x}))"
        twin = f"so_norm('{rule_code(rule, o)}', {x})"
        if rule.kind == "decimal" and rule.scale is not None and 0 <= rule.scale <= MAX_SQL_SCALE:
            return decimal_sql(x, rule.scale, twin)
        if rule.kind == "timestamp":
            return timestamp_sql(x, o.timestamp_precision, twin)
        return twin

    def may_null_text(self, kind: str) -> bool:
        return True  # a value may go through Python (so_norm), which may answer None

    def row_text(self, texts: list[str]) -> str:
        return f" || '{SEP}' || ".join(texts)

    def row_hash(self, text: str, fast_hash: bool) -> tuple[str, str]:
        return f"so_hash60({text})", f"so_hash_sum({text})"  # one Python call per row, not two

    def digest_query(self, side: Side, where: Sequence[Any]) -> sa.Select[Any]:
        """The joined texts built by ``group_concat`` (fed in the subquery's order; the separator
        X'FF' passes through as the byte itself), hashed by one Python call per range: the scan runs
        no Python per row (save values only the twin renders), so it does not hold the GIL the
        other side's scan needs."""
        rows = ordered_row_texts(side, where)
        joined: sa.ColumnClause[Any] = sa.literal_column(
            f"CAST(group_concat({rows.c.t.name}, X'{ROW_SEP.hex().upper()}') AS BLOB)"
        )
        return sa.select(sa.func.count(), sa.func.so_md5(joined)).select_from(rows)

    def digest_refused(self, error: sa.exc.DBAPIError) -> bool:
        return "too big" in str(error.orig)  # SQLITE_TOOBIG: the joined texts passed SQLite's length cap

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

    def cancel_statement(self, engine: Engine, driver_conn: Any) -> None:
        driver_conn.interrupt()  # sqlite3's own cross-thread abort

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


# -- canonical text in SQL ----------------------------------------------------------------
# Each expression takes its SQL path only where that path's text is provably the Python twin's
# (``normalize.canonical_text``) and hands every other value to the twin (``so_norm``): odd
# values cost a Python call, never a different text. Measured on the demo's 100k orders (one
# decimal, two timestamps): one side's whole-table digest 1.64 s CPU with every value in Python,
# 0.54 s here (bench/sqlite_diff.py has the diff).

MAX_SQL_SCALE = 9  # an integer's 19 digits and the scale stay within Decimal's 28 digits (no rounding)
# SQLAlchemy's DateTime text is 'YYYY-MM-DD HH:MM:SS.ffffff'; the ``datetime`` round trip checks
# the first 19 characters exactly, so the pattern only checks the length and the fraction
# (0.05 s per 100k values against 0.09 s for a pattern of all 26 characters).
FRACTION = "?" * 19 + "." + "[0-9]" * 6


def decimal_sql(x: str, scale: int, twin: str) -> str:
    """A decimal at a fixed ``scale``: integers and the reals that already have at most ``scale``
    decimals in SQL, everything else (zeros, so -0.0 keeps its sign; text; rounding) by ``twin``.

    A real takes the SQL path only when its ``printf('%.Nf')`` text reads back as the same double
    and has at most 15 significant digits: such a decimal is the only one of 15 digits that maps
    to that double (DBL_DIG), so Python's shortest repr is that same number and quantizing it
    rounds nothing.
    """
    fixed = f"printf('%.{scale}f', {x})"
    zeros = f" || '.{'0' * scale}'" if scale else ""
    return (
        f"CASE WHEN typeof({x}) = 'integer' THEN CAST({x} AS TEXT){zeros} "
        f"WHEN typeof({x}) = 'real' AND {x} <> 0 AND abs({x}) < 1e{15 - scale} "
        f"AND CAST({fixed} AS REAL) = {x} THEN {fixed} ELSE {twin} END"
    )


def timestamp_sql(x: str, precision: str, twin: str) -> str:
    """Seconds since 1970 with six decimals, for the texts SQLAlchemy and the backfill store from
    1970 on: 'YYYY-MM-DD HH:MM:SS.ffffff', or 'YYYY-MM-DD HH:MM:SS' when a copy wrote a whole
    second (then the seconds come from ``unixepoch`` and the fraction is the text's own digits,
    truncated to ``precision``); any other value (another shape, an invalid date SQLite would roll
    over, before 1970) by ``twin``.

    ``unixepoch`` reads the text without its fraction: SQLite rounds fractions to milliseconds,
    which would carry .9999996 into the next second. The year is compared as ``substr`` text: a
    DATETIME column has numeric affinity, which would turn a bare '1970' into a number (and any
    text sorts above every number). ``datetime`` needs a modifier to roll a 2023-02-29 or a 24:00
    over (without one it echoes the fields), so the first 19 characters must survive that round
    trip exactly; the pattern then checks only the fraction.
    """
    whole = f"substr({x}, 1, 19)"
    fraction = {"us": f"substr({x}, 20)", "ms": f"substr({x}, 20, 4) || '000'", "s": "'.000000'"}[precision]
    if precision != "s":
        fraction = f"CASE WHEN length({x}) = 19 THEN '.000000' ELSE {fraction} END"
    return (
        f"CASE WHEN typeof({x}) = 'text' AND substr({x}, 1, 4) >= '1970' AND datetime({whole}, '+0 days') = {whole} "
        f"AND (length({x}) = 19 OR {x} GLOB '{FRACTION}') THEN unixepoch({whole}) || {fraction} ELSE {twin} END"
    )


def _file_id(conn: sa.Connection) -> tuple[int, int] | str:
    """The main database file's device and inode; an in-memory database is its own connection."""
    import os

    path = conn.execute(sa.text("SELECT file FROM pragma_database_list WHERE name = 'main'")).scalar()
    if not path:
        return f"memory:{id(conn.connection.dbapi_connection)}"
    st = os.stat(path)
    return (st.st_dev, st.st_ino)
