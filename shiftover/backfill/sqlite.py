"""SQLite write path: one large transaction per chunk, insert-if-absent by the key.

``INSERT OR IGNORE`` would also skip rows that break NOT NULL or CHECK constraints, so the
conflict clause names the key: only an existing key is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import KeyRange
from shiftover.backfill.session import BorrowedConnection, Session, dedicated_connection, quoted_names
from shiftover.mapping import TableMapping


class SQLiteWriter:
    def __init__(self, engine: Engine, mapping: TableMapping, target: sa.Table, session: Session | None = None) -> None:
        self.raw = session or dedicated_connection(engine)
        self.borrowed = isinstance(self.raw, BorrowedConnection)  # the owner commits or rolls back
        self.conn = self.raw.driver
        table, columns = quoted_names(engine, target, mapping.target_columns)
        marks = ", ".join(["?"] * len(mapping.target_columns))
        keys = quoted_names(engine, target, mapping.target_key)[1]
        self.insert = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({keys}) DO NOTHING"

    def write_rows(self, rows: Sequence[Sequence[Any]], key_range: KeyRange) -> int:
        cur = self.conn.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(self.insert, rows)
            inserted = cur.rowcount
            if not self.borrowed:
                self.conn.commit()  # type: ignore[union-attr]
        except BaseException:
            if not self.borrowed:
                self.conn.rollback()  # type: ignore[union-attr]
            raise
        finally:
            cur.close()
        return max(int(inserted), 0)

    def close(self) -> None:
        self.raw.close()
