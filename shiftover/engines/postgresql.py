"""PostgreSQL (psycopg 3): COPY in and out, ON CONFLICT, row-value comparisons, plpgsql triggers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from shiftover.capture.triggers import CaptureNames, qualified, quote
from shiftover.diff.normalize import PRECISION_UNIT, ROW_SEP, SEP, ColumnRule, float_cutoff, same_scale
from shiftover.engines import EngineDialect, Key, Stats, ordered_row_texts, run_sample, upsert_on_conflict
from shiftover.spec import ValidationSpec

if TYPE_CHECKING:
    from shiftover.diff.checksum import Side
    from shiftover.mapping import TableMapping

PAGE_SAMPLE_ROWS = 5_000_000

# Errors that mean "this range cannot be digested", not "the diff failed": past the 1 GB text
# limit or out of memory, and text that is not UTF-8 (an SQL_ASCII database holding other bytes,
# which convert_to refuses and md5 of the text does not).
_NO_DIGEST = ("54000", "53200", "22021")


class PostgreSQL(EngineDialect):
    name = "postgresql"
    names = frozenset({"postgresql", "postgres"})
    bare_driver = "postgresql+psycopg"
    row_value_compare = True
    client_side_autocommit = True
    update_returning = True
    copy_target = True
    timezone_aware = True
    strict_booleans = True
    adapts_uuid_and_buffers = True
    # Same engine, same declared type: the engine's own text is canonical, and much cheaper than
    # formatting (to_char alone costs a third of a PostgreSQL scan).
    native_text = "({})::text"
    native_kinds = frozenset({"integer", "decimal", "text", "date", "timestamp", "uuid", "float"})
    max_identifier = 63  # bytes (NAMEDATALEN - 1): a longer name is cut with only a NOTICE

    def store_clock(self) -> sa.ColumnElement[float]:
        # statement_timestamp(): one value per statement (clock_timestamp() moves within one)
        return sa.cast(sa.func.extract("epoch", sa.func.statement_timestamp()), sa.Double())

    def portable_type(self, generic: sa.types.TypeEngine[Any], is_key: bool) -> sa.types.TypeEngine[Any]:
        if isinstance(generic, sa.JSON):
            return postgresql.JSON()  # the document's text as written: jsonb would turn -0.0 into 0.0
        if isinstance(generic, sa.Enum) and not generic.name:  # MariaDB's ENUM has no type name: its labels as text
            return sa.Enum(*generic.enums, native_enum=False, length=max((len(e) for e in generic.enums), default=1))
        return generic

    def upsert(self, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> Any:
        return upsert_on_conflict(postgresql.insert, table, rows, key)

    def read_stats(self, conn: sa.Connection, table: sa.Table) -> Stats:
        name = conn.dialect.identifier_preparer.format_table(table)
        row = conn.execute(
            sa.text("SELECT reltuples, pg_table_size(oid) FROM pg_class WHERE oid = to_regclass(:name)"),
            {"name": name},
        ).first()
        return (row[0], row[1], None) if row is not None else (None, None, None)

    def sample_keys(self, engine: Engine, table: sa.Table, key: Sequence[str], total: int, wanted: int) -> list[Key]:
        # BERNOULLI scans the table (about 0.15 s per 2M rows here) for a truly random sample;
        # past PAGE_SAMPLE_ROWS, SYSTEM samples whole pages instead (many rows per page, so
        # oversampled 50x), and falls back to BERNOULLI when it comes back short.
        fraction = min(1.0, wanted / max(total, 1))
        if total > PAGE_SAMPLE_ROWS:
            sample = run_sample(engine, _sample(table, key, sa.func.system, fraction * 100 * 50))
            if len(sample) >= wanted:
                return sample
        return run_sample(engine, _sample(table, key, sa.func.bernoulli, fraction * 100))

    def bulk_writer(self, engine: Engine, mapping: TableMapping, table: sa.Table, session: Any = None) -> Any:
        from shiftover.backfill.postgres import PostgresWriter

        return PostgresWriter(engine, mapping, table, session)

    def copy_stream(self) -> type[Any] | None:
        from shiftover.backfill.sources import PostgresStream

        return PostgresStream

    # -- diff -------------------------------------------------------------------------------
    def canonical_sql(self, rule: ColumnRule, own: str, x: str, col_type: Any, o: ValidationSpec) -> str:
        kind = rule.kind
        tz = bool(getattr(col_type, "timezone", False))
        if kind == "integer" or (kind == "decimal" and same_scale(rule, own, col_type)):
            return f"({x})::text"
        if kind == "decimal":
            if rule.scale is None:
                return f"trim_scale(({x})::numeric)::text"
            return f"round(({x})::numeric, {rule.scale})::text"
        if kind == "float":
            if o.float_tolerance:
                return (
                    f"CASE WHEN abs({x}) < {float_cutoff(o)} THEN "
                    f"round((({x})::float8 / {o.float_tolerance!r})::numeric)::text ELSE ({x})::float8::text END"
                )
            # Exact: PostgreSQL's shortest round-trip text is Python's repr but for whole numbers
            # below 1e15 ('3' for 3.0) and [1e15, 1e16) ('1e+15'); the first is mended here, the
            # second (and inf/NaN spellings) narrowed and settled bit for bit by the row compare.
            return (
                f"CASE WHEN ({x})::float8 = trunc(({x})::float8) AND abs(({x})::float8) < 1e15 "
                f"THEN ({x})::float8::text || '.0' ELSE ({x})::float8::text END"
            )
        if kind == "text":
            return f"rtrim(({x})::text, ' ')" if rule.pad else f"({x})::text"
        if kind == "boolean":
            cond = f"({x})" if own == "boolean" else f"({x}) <> 0"
            return f"CASE WHEN {cond} THEN '1' WHEN NOT {cond} THEN '0' END"
        if kind == "date":
            return f"to_char(({x})::date, 'YYYY-MM-DD')"
        if kind == "time":
            return f"to_char(date_trunc('{PRECISION_UNIT[o.timestamp_precision]}', ({x})::interval), 'HH24:MI:SS.US')"
        if kind == "timestamp":
            # extract(epoch) of a timestamptz is UTC already; PostgreSQL 14+ gives it six decimals,
            # 0.5 s per 2M values where padding timestamp::text or to_char cost 1.3 s (measured on PG 15).
            if o.timestamp_precision == "us":
                return f"extract(epoch from ({x}))::text" if tz else f"extract(epoch from ({x})::timestamp)::text"
            value = f"(({x}) AT TIME ZONE 'UTC')" if tz else f"({x})::timestamp"
            return f"extract(epoch from date_trunc('{PRECISION_UNIT[o.timestamp_precision]}', {value}))::text"
        if kind == "json":
            return f"({x})::jsonb::text"
        if kind == "uuid":
            return f"replace(lower(({x})::text), '-', '')"
        if kind == "binary":
            return f"encode(({x})::bytea, 'hex')"
        raise AssertionError(kind)

    def row_text(self, texts: list[str]) -> str:
        if len(texts) < 100:  # concat_ws: one call, not one per column (it takes at most 100 arguments)
            return f"concat_ws('{SEP}', {', '.join(texts)})"
        return f" || '{SEP}' || ".join(texts)

    def row_hash(self, text: str, fast_hash: bool) -> tuple[str, str]:
        if fast_hash:
            row_hash = f"hashtextextended({text}, 0)"
        else:
            row_hash = f"('x' || substr(md5({text}), 1, 15))::bit(60)::bigint"
        return row_hash, f"sum({row_hash})"

    def digest_query(self, side: Side, where: Sequence[Any]) -> sa.Select[Any]:
        rows = ordered_row_texts(side, where)
        # text cannot hold 0xFF: join the rows' UTF-8 bytes
        utf8 = sa.func.convert_to(rows.c.t, sa.literal_column("'UTF8'"))
        digest = sa.func.md5(sa.func.string_agg(utf8, sa.literal_column(f"'\\x{ROW_SEP.hex()}'::bytea")))
        return sa.select(sa.func.count(), digest).select_from(rows)

    def key_hash_list(self, key: str, text: str) -> str:
        return f"string_agg(({key})::text || ':' || md5({text}), ',')"

    def keyed_hash_list(self, keys: Sequence[str], text: str) -> str | None:
        parts = ", ".join(f"char_length(({k})::text), ':', ({k})::text" for k in keys)
        return f"string_agg(concat({parts}, md5({text})), '')"

    def digest_refused(self, error: sa.exc.DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) in _NO_DIGEST

    def postgres_major(self, engine: Engine) -> int | None:
        with engine.connect() as conn:
            return int(conn.dialect.server_version_info[0])  # type: ignore[index]

    # -- capture, expectations -------------------------------------------------------------
    def capture_install_ddl(self, d: sa.Dialect, n: CaptureNames, key: Sequence[str]) -> list[str]:
        log, fn, table = (
            qualified(d, n.changelog, n.schema),
            qualified(d, n.trigger, n.schema),
            qualified(d, n.table, n.schema),
        )
        new_key = ", ".join(f"NEW.{quote(d, k)}" for k in key)
        old_key = ", ".join(f"OLD.{quote(d, k)}" for k in key)
        return [
            f"CREATE TABLE IF NOT EXISTS {log} (seq BIGSERIAL PRIMARY KEY, op CHAR(1) NOT NULL, "
            "key_json TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
            f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {log} (op, key_json) VALUES ('D', json_build_array({old_key})::text);
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND ROW({old_key}) IS DISTINCT FROM ROW({new_key}) THEN
    INSERT INTO {log} (op, key_json) VALUES ('D', json_build_array({old_key})::text);
  END IF;
  INSERT INTO {log} (op, key_json) VALUES (left(TG_OP, 1), json_build_array({new_key})::text);
  RETURN NEW;
END $$""",
            f"DROP TRIGGER IF EXISTS {quote(d, n.trigger)} ON {table}",
            f"CREATE TRIGGER {quote(d, n.trigger)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def capture_remove_ddl(self, d: sa.Dialect, n: CaptureNames) -> list[str]:
        return [
            f"DROP TRIGGER IF EXISTS {quote(d, n.trigger)} ON {qualified(d, n.table, n.schema)}",
            f"DROP FUNCTION IF EXISTS {qualified(d, n.trigger, n.schema)}()",
        ]

    def cancel_statement(self, engine: Engine, driver_conn: Any) -> None:
        """psycopg's thread-safe cancel request (the statement fails with 57014; the session stays)."""
        driver_conn.cancel_safe(timeout=10.0)

    @contextlib.contextmanager
    def named_lock(self, conn: sa.Connection, name: str, timeout_seconds: int) -> Iterator[None]:
        key = sa.select(sa.func.hashtextextended(name, 0)).scalar_subquery()
        deadline = time.monotonic() + timeout_seconds
        while not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"lock {name!r} still held by another session after {timeout_seconds} s")
            time.sleep(0.1)
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))

    def same_server(self, a: sa.Connection, b: sa.Connection, token: str) -> bool:
        key = sa.select(sa.func.hashtextextended(token, 0)).scalar_subquery()
        a.execute(sa.select(sa.func.pg_advisory_lock(key)))
        try:
            return not b.execute(sa.select(sa.func.pg_try_advisory_lock_shared(key))).scalar()
        finally:
            a.execute(sa.select(sa.func.pg_advisory_unlock(key)))

    def table_identity(self, conn: sa.Connection, schema: str | None, table: str) -> tuple[Any, ...] | None:
        name = ".".join(quote(conn.dialect, p) for p in (schema, table) if p)
        row = conn.execute(sa.text("SELECT current_database(), to_regclass(:n)::oid"), {"n": name}).one()
        return None if row[1] is None else ("postgresql", row[0], int(row[1]))

    def gx_datasource(self, ctx: Any, url: str) -> Any:
        return ctx.data_sources.add_postgres(name="target", connection_string=url)


def _sample(table: sa.Table, key: Sequence[str], method: Any, percent: float) -> sa.Select[Any]:
    sampled = sa.tablesample(table, method(min(100.0, percent)))
    cols = [sampled.c[k] for k in key]
    return sa.select(*cols).order_by(*cols)
