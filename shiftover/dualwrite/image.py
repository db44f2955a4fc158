"""Row images for the synchronous secondary write, read on the primary's own connection.

Reading the image inside the primary's transaction (right after the write, under its row
lock) gives the same full row ``rowsync.sync_keys`` would read back after the commit, and
saves a connection checkout and three round trips per request. The image is written to the
secondary only after the primary has committed. Only a mapping of plain columns is read there:
a ``sql:`` column or a transform can fail, and must not fail the application's write.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.engines import dialect_for
from shiftover.mapping import TableMapping
from shiftover.rowsync import Key, absent_keys, key_in, write_rows


def image_in_transaction(mapping: TableMapping) -> bool:
    """Whether the image can be read inside the primary's transaction: nothing there may fail but the write."""
    return mapping.transform is None and all(c.sql is None for c in mapping.columns)


def read_image(conn: sa.Connection, mapping: TableMapping, table: sa.Table, keys: list[Key]) -> list[dict[str, Any]]:
    """The mapped rows (target column names) of ``keys`` as ``conn`` sees them now."""
    query = mapping.select_source(table).where(key_in(table, mapping.key, keys))
    return mapping.transform_records([dict(r._mapping) for r in conn.execute(query)])


def apply_image(target: Engine, mapping: TableMapping, keys: list[Key], rows: list[dict[str, Any]]) -> None:
    """Make ``keys`` in the target equal to ``rows``: upsert those present, delete the rest."""
    table = mapping.target_table_obj(target)
    gone = absent_keys(mapping, keys, rows)
    one_statement = not rows or not gone
    if one_statement and dialect_for(target).client_side_autocommit:
        # One statement is atomic on its own: autocommit saves the BEGIN and COMMIT round trips
        # where the driver switches autocommit without a round trip (PyMySQL sends SET AUTOCOMMIT each way).
        writing: AbstractContextManager[sa.Connection] = target.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        )
    else:
        writing = target.begin()
    with writing as conn:
        write_rows(conn, table, mapping, rows, gone)
