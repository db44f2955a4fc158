"""MySQL and MariaDB (PyMySQL), whether the URL says ``mysql+pymysql`` or ``mariadb+pymysql``:
sessions in UTC, ON DUPLICATE KEY, GROUP_CONCAT digests, one trigger per operation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Engine

from shiftover.capture.triggers import CaptureNames, qualified, quote
from shiftover.diff.normalize import PRECISION_DIVISOR, ROW_SEP, SEP, ColumnRule, float_cutoff, same_scale
from shiftover.engines import EngineDialect, Key, Stats, run_sample
from shiftover.spec import ValidationSpec

if TYPE_CHECKING:
    from shiftover.diff.checksum import Side
    from shiftover.mapping import TableMapping

GROUP_CONCAT_MAX = 4_294_967_295  # one GROUP_CONCAT's cap for the session (4 GiB)
TO_SECONDS_1970 = 62_167_219_200  # TO_SECONDS('1970-01-01')


class MySQL(EngineDialect):
    name = "mysql"
    names = frozenset({"mysql", "mariadb"})
    bare_driver = "mysql+pymysql"
    int_div = "DIV"
    renders_by_declared_type = True
    native_text = "{}"
    native_kinds = frozenset({"integer", "decimal", "text", "date", "timestamp", "float"})
    max_identifier = 64  # characters

    def store_clock(self) -> sa.ColumnElement[float]:
        # NOW(6) is the statement's start, to the microsecond (a DECIMAL: arithmetic with the
        # DOUBLE columns is done in DOUBLE)
        return sa.type_coerce(sa.func.unix_timestamp(sa.func.now(6)), sa.Double())

    def identifier_length(self, name: str) -> int:
        return len(name)

    def normalise_url(self, url: URL) -> URL:
        url = super().normalise_url(url)
        return url if "charset" in url.query else url.update_query_dict({"charset": "utf8mb4"})

    @contextlib.contextmanager
    def utc_session(self, conn: sa.Connection) -> Iterator[None]:
        """TIMESTAMP columns read in UTC, then the pooled session restored."""
        conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
        try:
            yield
        finally:
            conn.exec_driver_sql("SET SESSION time_zone = DEFAULT")

    def prepare_hash_session(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"SET time_zone = '+00:00', group_concat_max_len = {GROUP_CONCAT_MAX}")

    def upsert(self, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> Any:
        stmt = mysql.insert(table).values(rows)
        updates = {c: stmt.inserted[c] for c in rows[0] if c not in key}
        return stmt.on_duplicate_key_update(updates or {key[0]: stmt.inserted[key[0]]})

    def read_stats(self, conn: sa.Connection, table: sa.Table) -> Stats:
        row = conn.execute(
            sa.text(
                "SELECT TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
            ),
            {"schema": table.schema, "name": table.name},
        ).first()
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        return (row[0], row[1], packet) if row is not None else (None, None, packet)

    def sample_keys(self, engine: Engine, table: sa.Table, key: Sequence[str], total: int, wanted: int) -> list[Key]:
        cols = [table.c[k] for k in key]
        fraction = min(1.0, wanted / max(total, 1))
        return run_sample(engine, sa.select(*cols).where(sa.func.rand() < fraction).order_by(*cols))

    def bulk_writer(self, engine: Engine, mapping: TableMapping, table: sa.Table, session: Any = None) -> Any:
        from shiftover.backfill.mysql import MySQLWriter

        return MySQLWriter(engine, mapping, table, session)

    def copy_stream(self) -> type[Any] | None:
        from shiftover.backfill.sources import MySQLStream

        return MySQLStream

    def portable_type(self, generic: sa.types.TypeEngine[Any], is_key: bool) -> sa.types.TypeEngine[Any]:
        if isinstance(generic, sa.Interval | sa.ARRAY):
            return sa.types.NullType()  # no such type here: the rehearsal refuses the column
        if isinstance(generic, sa.Numeric) and not isinstance(generic, sa.Float) and generic.precision is None:
            # an unconstrained decimal (PostgreSQL numeric): the widest MariaDB keeps, not DECIMAL(10,0);
            # a value past it is refused or found changed by the rehearsal
            return mysql.DECIMAL(65, 30)
        if isinstance(generic, sa.DateTime):
            return mysql.DATETIME(fsp=6)
        if isinstance(generic, sa.String) and is_key:
            # a key keeps the source's case and accents apart: the server's default collation is
            # case- and accent-insensitive, so 'abc' and 'Abc' would collide (binary still pads
            # trailing spaces: the rehearsal finds such keys)
            return mysql.VARCHAR(generic.length or 255, charset="utf8mb4", collation="utf8mb4_bin")
        if isinstance(generic, sa.String) and isinstance(generic, sa.Text) and not generic.length:
            return mysql.LONGTEXT()
        if isinstance(generic, sa.LargeBinary):
            return mysql.LONGBLOB()
        return generic

    def expression_type(self) -> sa.types.TypeEngine[Any]:
        return sa.String(255)

    def json_columns(self, engine: Engine, table: sa.Table) -> set[str]:
        """MariaDB's JSON columns: LONGTEXT with the column CHECK ``json_valid(`name`)``."""
        query = sa.text(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
        )
        with engine.connect() as conn:
            try:
                rows = conn.execute(query, {"s": table.schema, "t": table.name}).all()
            except sa.exc.DBAPIError:  # MySQL before 8.0.16 has no such view (and its JSON reflects as JSON)
                return set()
        quoted = {"json_valid(`" + c.name.replace("`", "``") + "`)": c.name for c in table.columns}
        return {quoted[clause] for _, clause in rows if clause in quoted}

    def reflected_name(self, name: str) -> str:
        """SQLAlchemy reads a backtick in a column name from SHOW CREATE TABLE still doubled."""
        return name.replace("``", "`")

    # -- diff -------------------------------------------------------------------------------
    def canonical_sql(self, rule: ColumnRule, own: str, x: str, col_type: Any, o: ValidationSpec) -> str:
        kind = rule.kind
        if kind == "integer" or (kind == "decimal" and same_scale(rule, own, col_type)):
            return f"{x}"  # CONCAT_WS renders numbers itself
        if kind == "timestamp":
            # Seconds since 1970 (TO_SECONDS counts from year 0 and, unlike UNIX_TIMESTAMP, covers
            # every year); the session runs in UTC, so a TIMESTAMP column reads as UTC.
            seconds = f"(TO_SECONDS({x}) - {TO_SECONDS_1970})"
            div = PRECISION_DIVISOR[o.timestamp_precision]
            fsp = 0 if own == "date" else int(getattr(col_type, "fsp", 6) or 0) if own == "timestamp" else 6
            if fsp == 0 or div == 1_000_000:
                return f"CONCAT({seconds}, '.000000')"
            return f"CAST({seconds} + {_micro(x, div)} * 0.000001 AS DECIMAL(24, 6))"
        if kind == "decimal":
            return f"CAST(CAST({x} AS DECIMAL(65, {rule.scale if rule.scale is not None else 30})) AS CHAR)"
        if kind == "float":
            if o.float_tolerance:
                return (
                    f"CASE WHEN ABS({x}) < {float_cutoff(o)} THEN CAST(CAST(ROUND({x} / {o.float_tolerance!r}) "
                    f"AS DECIMAL(65, 0)) AS CHAR) ELSE CAST({x} AS CHAR) END"
                )
            # Exact: MariaDB's text has the same shortest round-trip digits as Python's repr, but
            # writes 3.0 as '3' and 1e300 as '1e300'; both are mended here. It also writes some
            # magnitudes positionally that repr writes with an exponent (2.5e-10, 1e15): those are
            # narrowed and settled bit for bit by the row compare.
            text = f"CAST({x} AS CHAR)"
            return (
                f"CASE WHEN {x} = TRUNCATE({x}, 0) AND ABS({x}) < 1e15 THEN CONCAT({text}, '.0') "
                f"ELSE REPLACE(REPLACE({text}, 'e', 'e+'), 'e+-', 'e-') END"
            )
        if kind == "text":
            return f"TRIM(TRAILING ' ' FROM {x})" if rule.pad else f"{x}"
        if kind == "boolean":
            return f"CASE WHEN {x} <> 0 THEN '1' WHEN {x} = 0 THEN '0' END"
        if kind == "date":
            return f"DATE_FORMAT({x}, '%Y-%m-%d')"
        if kind == "time":
            micro = _micro(x, PRECISION_DIVISOR[o.timestamp_precision])
            return f"CONCAT(TIME_FORMAT({x}, '%H:%i:%s.'), LPAD({micro}, 6, '0'))"
        if kind == "json":
            return f"JSON_NORMALIZE({x})"
        if kind == "uuid":
            return f"REPLACE(LOWER(CAST({x} AS CHAR)), '-', '')"
        if kind == "binary":
            return f"LOWER(HEX({x}))"
        raise AssertionError(kind)

    def may_null_text(self, kind: str) -> bool:
        """The date functions turn zero dates into NULL; JSON_NORMALIZE bad JSON."""
        return kind in ("timestamp", "date", "time", "json")

    def row_text(self, texts: list[str]) -> str:
        return f"CONCAT_WS('{SEP}', {', '.join(texts)})"

    def row_hash(self, text: str, fast_hash: bool) -> tuple[str, str]:
        row_hash = f"CAST(CONV(LEFT(MD5({text}), 15), 16, 10) AS UNSIGNED)"
        return row_hash, f"SUM({row_hash})"

    def digest_query(self, side: Side, where: Sequence[Any]) -> sa.Select[Any]:
        order = "" if side.key_is_primary else " ORDER BY " + ", ".join(side.quoted(k) for k in side.key)
        joined = f"MD5(GROUP_CONCAT({side.row_text}{order} SEPARATOR X'{ROW_SEP.hex()}'))"
        table: Any = side.table
        query: Any = sa.select(sa.func.count(), sa.literal_column(joined)).select_from(table).where(*where)
        if side.key_is_primary:  # the primary key's range scan gives key order without a sort
            for dialect_name in sorted(self.names):  # a hint applies to the dialect it names
                query = query.with_hint(table, "FORCE INDEX (PRIMARY)", dialect_name)
        return query  # type: ignore[no-any-return]

    def key_hash_list(self, key: str, text: str) -> str:
        return f"GROUP_CONCAT(CONCAT({key}, ':', MD5({text})) SEPARATOR ',')"

    def keyed_hash_list(self, keys: Sequence[str], text: str) -> str | None:
        parts = ", ".join(f"CHAR_LENGTH({k}), ':', {k}" for k in keys)
        return f"GROUP_CONCAT(CONCAT({parts}, MD5({text})) SEPARATOR '')"

    def warned(self, conn: sa.Connection) -> bool:
        """A GROUP_CONCAT cut at max_allowed_packet, a value the server could not convert, ..."""
        return bool(conn.exec_driver_sql("SELECT @@warning_count").scalar())

    def warning(self, conn: sa.Connection) -> str | None:
        row = conn.exec_driver_sql("SHOW WARNINGS LIMIT 1").first()
        return None if row is None else f"{row[0]} {row[1]}: {row[2]}"

    # -- capture, decommission, expectations -----------------------------------------------
    def capture_install_ddl(self, d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
        log, table = qualified(d, n.changelog, n.schema), qualified(d, n.table, n.schema)
        new_key = ", ".join(f"NEW.{quote(d, k)}" for k in key)
        old_key = ", ".join(f"OLD.{quote(d, k)}" for k in key)
        same_key = " AND ".join(f"OLD.{quote(d, k)} <=> NEW.{quote(d, k)}" for k in key)

        def trig(suffix: str) -> str:
            return qualified(d, f"{n.trigger}_{suffix}", n.schema)

        return [
            f"CREATE TABLE IF NOT EXISTS {log} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL, "
            "key_json TEXT NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
            *(f"DROP TRIGGER IF EXISTS {trig(s)}" for s in ("ins", "upd", "del")),
            f"CREATE TRIGGER {trig('ins')} AFTER INSERT ON {table} FOR EACH ROW "
            f"INSERT INTO {log} (op, key_json) VALUES ('I', JSON_ARRAY({new_key}))",
            f"""CREATE TRIGGER {trig("upd")} AFTER UPDATE ON {table} FOR EACH ROW BEGIN
  IF NOT ({same_key}) THEN INSERT INTO {log} (op, key_json) VALUES ('D', JSON_ARRAY({old_key})); END IF;
  INSERT INTO {log} (op, key_json) VALUES ('U', JSON_ARRAY({new_key}));
END""",
            f"CREATE TRIGGER {trig('del')} AFTER DELETE ON {table} FOR EACH ROW "
            f"INSERT INTO {log} (op, key_json) VALUES ('D', JSON_ARRAY({old_key}))",
        ]

    def capture_remove_ddl(self, d: sa.Dialect, n: CaptureNames) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {qualified(d, f'{n.trigger}_{s}', n.schema)}" for s in ("ins", "upd", "del")]

    def rename_ddl(self, schema_prefix: str, old: str, new: str) -> str:
        return f"RENAME TABLE {schema_prefix}{old} TO {schema_prefix}{new}"

    def cancel_statement(self, engine: Engine, driver_conn: Any) -> None:
        """``KILL QUERY`` from a connection of its own (the statement fails with 1317; the session stays)."""
        with engine.connect() as conn:
            conn.execute(sa.text(f"KILL QUERY {int(driver_conn.thread_id())}"))

    @contextlib.contextmanager
    def named_lock(self, conn: sa.Connection, name: str, timeout_seconds: int) -> Iterator[None]:
        name = name[:64]  # GET_LOCK's limit
        if conn.execute(sa.select(sa.func.get_lock(name, timeout_seconds))).scalar() != 1:
            raise TimeoutError(f"lock {name!r} still held by another session after {timeout_seconds} s")
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.release_lock(name)))

    def same_server(self, a: sa.Connection, b: sa.Connection, token: str) -> bool:
        name = f"shiftover-identity-{token}"[:64]
        a.execute(sa.select(sa.func.get_lock(name, 5)))
        try:
            return not b.execute(sa.select(sa.func.is_free_lock(name))).scalar()
        finally:
            a.execute(sa.select(sa.func.release_lock(name)))

    def table_identity(self, conn: sa.Connection, schema: str | None, table: str) -> tuple[Any, ...] | None:
        """Schema and name as the server folds them (``lower_case_table_names``), if the table exists.

        No server in it: MariaDB keeps no stable id of its own. ``@@server_id`` is 1 unless set,
        ``@@server_uid`` hashes a MAC address and the port, ``@@hostname`` is a container's id: the
        last two change when a container is recreated, and an identity that changes under an
        unfinished change would let a second change on its table through (``schema.claim``). So
        two servers with the same database and table, sharing one control store, refuse each
        other's second change instead: the safe side."""
        query = sa.text(
            "SELECT TABLE_SCHEMA, TABLE_NAME, @@lower_case_table_names FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
        )
        row = conn.execute(query, {"s": schema, "t": table}).first()
        if row is None:
            return None
        fold = (lambda x: str(x).lower()) if int(row[2] or 0) else str
        return ("mysql", fold(row[0]), fold(row[1]))

    def gx_datasource(self, ctx: Any, url: str) -> Any:
        import warnings

        with warnings.catch_warnings():  # the generic SQL datasource (it warns)
            warnings.simplefilter("ignore")
            return ctx.data_sources.add_sql(name="target", connection_string=url)


def _micro(x: str, div: int) -> str:
    """The microseconds of ``x`` truncated to a multiple of ``div``."""
    return f"MICROSECOND({x})" if div == 1 else f"(MICROSECOND({x}) - MICROSECOND({x}) % {div})"
