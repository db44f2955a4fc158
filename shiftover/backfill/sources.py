"""Sources that feed a PostgreSQL target COPY data directly, so rows are never decoded in Python.

* ``PostgresStream``: ``COPY (SELECT ...) TO STDOUT``, binary when both sides have the same
  column types, text otherwise (the target's input functions convert).
* ``MySQLStream``: the MySQL/MariaDB server formats each row as a line of PostgreSQL's COPY
  text format (``\\N`` for NULL, escaped tabs, newlines and backslashes, ``\\x`` hex for
  binary), so the Python driver parses one string per row instead of every field: about
  3x the rows/s of PyMySQL's typed rows.

Both cut a segment into chunks with a keyset boundary query (the key ``rows`` rows past the
last checkpoint), then copy the chunk's key range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import Key, KeyRange, key_columns, range_clause
from shiftover.backfill.postgres import PostgresWriter, batched, column_type_oids
from shiftover.backfill.session import compile_query, dedicated_connection
from shiftover.engines import dialect_for
from shiftover.mapping import TableMapping


class _KeysetStream:
    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine)
        self.mapping = mapping
        self.table = mapping.source_table_obj(engine)
        self.session = dedicated_connection(engine)
        self.conn: Any = self.session.driver

    def chunk_end(self, within: KeyRange, rows: int) -> Key | None:
        """The key ``rows`` rows past ``within.lo`` (None when fewer remain): the chunk's inclusive end."""
        cols = key_columns(self.table, self.mapping.key)
        where = range_clause(self.table, self.mapping.key, within.lo, within.hi, self.dialect)
        query = sa.select(*cols).where(where).order_by(*cols).offset(rows - 1).limit(1)
        sql_text, params = compile_query(query, self.engine)
        cur = self.conn.cursor()
        try:
            cur.execute(sql_text, params)
            row = cur.fetchone()
        finally:
            cur.close()
        return tuple(row) if row is not None else None

    def chunk_query(self, chunk: KeyRange) -> sa.Select[Any]:
        where = range_clause(self.table, self.mapping.key, chunk.lo, chunk.hi, self.dialect)
        return self.mapping.select_source(self.table).where(where)

    def close(self) -> None:
        self.session.close()


class PostgresStream(_KeysetStream):
    def __init__(self, engine: Engine, mapping: TableMapping, writer: PostgresWriter) -> None:
        super().__init__(engine, mapping)
        self.conn.autocommit = True  # each COPY is its own statement: no long transaction on the source
        self.conn.execute("SET TIME ZONE 'UTC'")
        self.binary = self._same_types(writer)

    def _same_types(self, writer: PostgresWriter) -> bool:
        select, params = compile_query(self.chunk_query(KeyRange(None, None)), self.engine)
        target_cols = sa.select(*(writer.target.c[c] for c in self.mapping.target_columns))
        same = column_type_oids(self.conn, select, params) == column_type_oids(
            writer.conn, *compile_query(target_cols, writer.engine)
        )
        if not writer.borrowed:  # a borrowed session's transaction is its owner's (the rehearsal's)
            writer.conn.commit()
        return same

    def copy_chunk(self, writer: PostgresWriter, chunk: KeyRange) -> tuple[int, int]:
        select, params = compile_query(self.chunk_query(chunk), self.engine)
        copy_out = f"COPY ({select}) TO STDOUT" + (" (FORMAT BINARY)" if self.binary else "")

        def blocks() -> Iterator[bytes]:
            with self.conn.cursor() as cur, cur.copy(copy_out, params) as out:
                yield from batched(out)

        return writer.write_blocks(blocks, self.binary, chunk)


def _mysql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_text_expr(column: sa.ColumnElement[Any], type_: sa.types.TypeEngine[Any] | None, dialect: sa.Dialect) -> str:
    """MySQL SQL that renders one value as a field of PostgreSQL's COPY text format."""
    sql = str(column.compile(dialect=dialect))
    if isinstance(type_, sa.LargeBinary | sa.types._Binary):
        value = f"CONCAT({_mysql_literal(chr(92) * 2 + 'x')}, HEX({sql}))"
    elif isinstance(type_, sa.Integer | sa.Numeric | sa.Date | sa.DateTime | sa.Time | sa.Boolean):
        value = sql  # digits, signs, dots, dashes, colons: nothing to escape
    else:
        value = sql
        for raw, escaped in _ESCAPES:
            value = f"REPLACE({value}, {_mysql_literal(raw)}, {_mysql_literal(escaped)})"
    return f"IFNULL({value}, {_mysql_literal(chr(92) + 'N')})"


class MySQLStream(_KeysetStream):
    binary = False

    def __init__(self, engine: Engine, mapping: TableMapping, writer: PostgresWriter) -> None:
        super().__init__(engine, mapping)
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMP columns read as UTC
        fields = []
        for col in mapping.columns:
            if col.sql is not None:
                fields.append(copy_text_expr(sa.literal_column(f"({col.sql})"), None, engine.dialect))
            else:
                source_col = self.table.c[col.source]
                fields.append(copy_text_expr(source_col, source_col.type, engine.dialect))
        self.line: sa.ColumnElement[Any] = sa.literal_column(
            f"CONCAT_WS({_mysql_literal(chr(9))}, {', '.join(fields)})"
        )

    def copy_chunk(self, writer: PostgresWriter, chunk: KeyRange, fetch_rows: int = 10_000) -> tuple[int, int]:
        cols = key_columns(self.table, self.mapping.key)
        where = range_clause(self.table, self.mapping.key, chunk.lo, chunk.hi, self.dialect)
        select, params = compile_query(
            sa.select(self.line).select_from(self.table).where(where).order_by(*cols), self.engine
        )

        def blocks() -> Iterator[bytes]:
            import pymysql.cursors

            cur = self.conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: memory stays at one batch
            try:
                cur.execute(select, params)
                while rows := cur.fetchmany(fetch_rows):
                    yield ("\n".join(r[0] for r in rows) + "\n").encode()
            finally:
                cur.close()

        return writer.write_blocks(blocks, False, chunk)


def stream_for(source: Engine, target: Engine, mapping: TableMapping) -> type[PostgresStream | MySQLStream] | None:
    """The direct stream for this pair of engines, or None (rows then pass through Python)."""
    if not dialect_for(target).copy_target or not mapping.fast_path:
        return None
    return dialect_for(source).copy_stream()
