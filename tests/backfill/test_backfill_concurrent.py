"""The backfill under live dual-writes: rows the dual-writer upserts into the target while the
copy runs are never overwritten by older copies, so old and new end identical."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from shiftover.backfill import run_backfill
from shiftover.connect import get_engine
from shiftover.rowsync import sync_keys

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql

N = 8000


@pytest.mark.parametrize("target_engine", ["postgresql", "mysql"])
def test_dual_writes_during_backfill_survive(target_engine, pg_database, mariadb_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source = pg_database()
    target = pg_database() if target_engine == "postgresql" else mariadb_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target, chunk_rows=250, concurrency=2, max_rows_per_second=8000)
    stop = threading.Event()
    written: list[int] = []

    def dual_writer() -> None:  # old first, then new (full row image, upsert by key)
        rng = random.Random(3)
        old = get_engine(source)
        next_id = N + 1
        while not stop.is_set():
            key = rng.randrange(1, N + 1)
            with old.begin() as conn:
                conn.execute(sa.text("UPDATE items SET n = -n, v = 'dual' WHERE id = :k"), {"k": key})
                conn.execute(sa.text("INSERT INTO items VALUES (:k, 0, 'new')"), {"k": next_id})
            sync_keys(migration.source, migration.target, migration.mapping, [(key,), (next_id,)])
            written.extend([key, next_id])
            next_id += 1

    writer = threading.Thread(target=dual_writer)
    writer.start()
    try:
        summary = run_backfill(migration)
    finally:
        stop.set()
        writer.join()

    assert summary.complete and len(written) > 20
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
