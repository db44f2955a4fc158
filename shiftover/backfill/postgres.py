"""PostgreSQL write path: COPY into a session-private staging table, then insert-if-absent.

When the chunk's key range holds no row in the target yet (the common case of a first
copy), rows are COPYed straight into the target: if a dual-written row lands in the range
meanwhile, the COPY fails on the key, rolls back whole, and the chunk goes through staging,
so a row already in the target is never overwritten. ``write_blocks`` takes COPY data
from the streams in ``sources`` (rows never decoded in Python). On a borrowed session (the
rehearsal) every chunk goes through staging and nothing is committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import KeyRange, range_clause
from shiftover.backfill.session import BorrowedConnection, Session, compile_query, dedicated_connection
from shiftover.engines import dialect_for
from shiftover.mapping import TableMapping


class PostgresWriter:
    """Holds one target session for a segment: its staging table lives as long as the writer."""

    def __init__(self, engine: Engine, mapping: TableMapping, target: sa.Table, session: Session | None = None) -> None:
        self.engine = engine
        self.mapping = mapping
        self.target = target
        self.raw = session or dedicated_connection(engine)
        self.borrowed = isinstance(self.raw, BorrowedConnection)
        self.conn: psycopg.Connection[Any] = self.raw.driver  # type: ignore[assignment]
        self.conn.execute("SET TIME ZONE 'UTC'")
        self.columns = sql.SQL(", ").join(sql.Identifier(c) for c in mapping.target_columns)
        self.table = _qualified(mapping.target_table, mapping.target_schema)
        self.stage = sql.Identifier(f"so_stage_{uuid.uuid4().hex[:12]}")
        self.conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA").format(
                self.stage, self.columns, self.table
            )
        )
        if not self.borrowed:
            self.conn.commit()
        self._insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING").format(
            self.table,
            self.columns,
            self.columns,
            self.stage,
            sql.SQL(", ").join(sql.Identifier(k) for k in mapping.target_key),
        )

    def close(self) -> None:
        self.raw.close()

    # -- rows already in Python ------------------------------------------------------
    def write_rows(self, rows: Sequence[Sequence[Any]], key_range: KeyRange) -> int:
        """Insert-if-absent ``rows`` (target column order) and commit; returns rows inserted."""
        return self._write(lambda dest: self._copy_rows(dest, rows), key_range)[1]

    def _copy_rows(self, dest: sql.Composable, rows: Sequence[Sequence[Any]]) -> int:
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(dest, self.columns)) as copy:
                for row in rows:
                    copy.write_row(row)
            return cur.rowcount

    # -- COPY data streamed from a source --------------------------------------------------
    def write_blocks(self, blocks: Callable[[], Iterable[bytes]], binary: bool, key_range: KeyRange) -> tuple[int, int]:
        """COPY the blocks that ``blocks()`` yields (COPY text or binary data); returns (rows read, rows inserted)."""
        fmt = sql.SQL("(FORMAT BINARY)" if binary else "")

        def stream(dest: sql.Composable) -> int:
            with self.conn.cursor() as cur:
                copy_in = sql.SQL("COPY {} ({}) FROM STDIN {}").format(dest, self.columns, fmt)
                with cur.copy(copy_in, writer=QueuedLibpqWriter(cur)) as inp:
                    for block in blocks():
                        inp.write(block)
                return cur.rowcount

        return self._write(stream, key_range)

    # -- the two ways in -----------------------------------------------------------------
    def _write(self, copy_into: Any, key_range: KeyRange) -> tuple[int, int]:
        """Run ``copy_into(destination)`` straight into the target when safe, else via staging."""
        if self.borrowed:
            return self._staged(copy_into)
        if self._range_empty(key_range):
            try:
                copied = int(copy_into(self.table))
                self.conn.commit()
                return copied, copied
            except psycopg.errors.UniqueViolation:
                self.conn.rollback()  # a dual-written row arrived first: go the careful way
            except BaseException:
                self.conn.rollback()
                raise
        try:
            copied = int(copy_into(self.stage))
            with self.conn.cursor() as cur:
                cur.execute(self._insert)
                inserted = cur.rowcount
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return copied, inserted

    def _staged(self, copy_into: Any) -> tuple[int, int]:
        """Staging and insert-if-absent inside the owner's transaction (the stage emptied after)."""
        copied = int(copy_into(self.stage))
        with self.conn.cursor() as cur:
            cur.execute(self._insert)
            inserted = cur.rowcount
            cur.execute(sql.SQL("DELETE FROM {}").format(self.stage))
        return copied, inserted

    def _range_empty(self, key_range: KeyRange) -> bool:
        where = range_clause(self.target, self.mapping.target_key, key_range.lo, key_range.hi, dialect_for(self.engine))
        query, params = compile_query(
            sa.select(sa.literal(1)).select_from(self.target).where(where).limit(1), self.engine
        )
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            found = cur.fetchone() is not None
        self.conn.commit()
        return not found


def batched(out: Iterable[bytes], batch_bytes: int = 1 << 20) -> Iterator[bytes]:
    """COPY data regrouped into ~1 MB blocks: libpq hands it over one row at a time, and a
    write per row would cost more than the copy itself."""
    buffer = bytearray()
    for block in out:
        buffer += block
        if len(buffer) >= batch_bytes:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _qualified(table: str, schema: str | None) -> sql.Composable:
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def column_type_oids(conn: psycopg.Connection[Any], query: str, params: Any) -> list[int]:
    """The result column types of a query (its first zero rows), to decide binary COPY."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM ({query}) AS so_probe LIMIT 0", params)
        return [d.type_code for d in cur.description or []]
