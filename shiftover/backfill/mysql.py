"""MySQL/MariaDB write path: large multi-row INSERTs that skip keys already present.

``INSERT IGNORE`` (and ``LOAD DATA ... IGNORE``) would also turn a value too long or out of
range into a warning and a silently altered row, so the insert-if-absent here is
``ON DUPLICATE KEY UPDATE key = key`` in a strict session: duplicates are skipped, data
errors still fail the chunk. PyMySQL's ``executemany`` folds the rows into multi-row INSERTs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import KeyRange
from shiftover.backfill.session import BorrowedConnection, Session, dedicated_connection, quoted_names
from shiftover.mapping import TableMapping


class MySQLWriter:
    def __init__(self, engine: Engine, mapping: TableMapping, target: sa.Table, session: Session | None = None) -> None:
        self.raw = session or dedicated_connection(engine)
        self.borrowed = isinstance(self.raw, BorrowedConnection)  # the owner commits or rolls back
        self.conn = self.raw.driver
        with self.conn.cursor() as cur:  # type: ignore[union-attr]
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
            cur.execute("SET SESSION time_zone = '+00:00'")
        table, columns = quoted_names(engine, target, mapping.target_columns)
        marks = ", ".join(["%s"] * len(mapping.target_columns))
        first_key = engine.dialect.identifier_preparer.quote(mapping.target_key[0])
        self.insert = (
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {first_key} = {first_key}"
        )

    def write_rows(self, rows: Sequence[Sequence[Any]], key_range: KeyRange) -> int:
        with self.conn.cursor() as cur:  # type: ignore[union-attr]
            cur.executemany(self.insert, rows)
            inserted = cur.rowcount
        if not self.borrowed:
            self.conn.commit()  # type: ignore[union-attr]
        return max(int(inserted), 0)

    def close(self) -> None:
        self.raw.close()
