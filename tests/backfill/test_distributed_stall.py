"""A worker alive but stuck loses its segment: two worker processes copy from PostgreSQL into
PostgreSQL or MariaDB (the control store on the same engine as the target) while the test holds an
uncommitted insert of a key in one segment, so the worker copying that segment blocks on it,
heartbeat alive. Past ``stall_seconds`` without a committed chunk it gives the segment up (its
statement cancelled, the stall audited) and the other worker takes it over from its checkpoint;
the tables end identical and the checkpoints add up to the table's rows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.workers import distributed_progress, plan_distributed, start_worker_processes
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.migration import open_migration
from shiftover.spec import parse_spec

from .conftest import ITEMS_DDL, fill_items, items_spec, rows_of, run_sql

N, CHUNK, TTL, STALL = 20_000, 1_000, 3.0, 6.0
ROWS = "SELECT id, n, v FROM items ORDER BY id"
# sessions of the current database waiting on a lock
LOCK_WAITERS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    "mariadb": "SELECT count(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
    "ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()",
}


@pytest.mark.parametrize("engine_name", ["postgresql", "mariadb"])
def test_a_worker_blocked_on_a_row_lock_loses_its_segment(engine_name: str, request: pytest.FixtureRequest) -> None:
    pg_database: Callable[[], str] = request.getfixturevalue("pg_database")
    other: Callable[[], str] = request.getfixturevalue(
        "pg_database" if engine_name == "postgresql" else "mariadb_database"
    )
    source, target, store_url = pg_database(), other(), other()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": 2, "lease_ttl_seconds": TTL, "stall_seconds": STALL}
    spec = items_spec(source, target, "m1", chunk_rows=CHUNK, distributed=distributed)
    migration = open_migration(parse_spec(spec), store_url)
    engine = migration.store.engine
    plan = plan_distributed(migration, 4)
    blocked = plan[2].segment
    assert blocked.range.lo is not None
    key = int(blocked.range.lo[0]) + CHUNK + CHUNK // 2  # in the segment's second chunk: one chunk commits first
    # held open by the test: whoever copies that chunk waits on this key (the unique index)
    lock = get_engine(target).raw_connection()
    lock.cursor().execute("INSERT INTO items (id, n, v) VALUES (%s, %s, %s)", (key, key, f"v{key}"))

    procs = start_worker_processes(migration, 2, ttl=TTL, prefix="s")
    try:
        first = _holder_when_stuck(engine, blocked.index)
        second = _taken_over_from(engine, blocked.index, first, within=STALL + 4 * TTL + 20)
        # the stuck statement was cancelled: only the new holder's copy waits on the key (never two)
        waiting = _lock_waiters(target, LOCK_WAITERS[engine_name], seconds=3.0)
        lock.rollback()  # the new holder's copy goes through now
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        lock.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert max(waiting) == 1, waiting
    by_worker = {r["worker"]: r for r in reports}
    assert blocked.index in by_worker[first]["stalled"], reports
    assert blocked.index in by_worker[first]["lost"], reports
    assert blocked.index in by_worker[second]["taken_over"], reports
    stalls = ControlStore(engine).audit_entries("m1", "segment_stalled")
    assert [(e["actor"], e["detail"]["segment"]) for e in stalls] == [(first, blocked.index)]
    assert stalls[0]["detail"]["idle_seconds"] > STALL

    progress = distributed_progress("m1", engine)
    assert progress.complete and progress.segments_failed == 0
    assert progress.rows_copied == N  # the stuck chunk is counted once, by the new holder
    copied = rows_of(target, ROWS)
    assert len(copied) == N and copied == rows_of(source, ROWS)


def _holder_when_stuck(engine: Any, segment: int) -> str:
    """The worker copying ``segment`` once its first chunk is checkpointed (the second one blocks)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = next(r for r in leases.read_leases(engine, "m1") if r.segment == segment)
        if row.holder is not None and row.rows_copied >= CHUNK:
            assert row.state == checkpoints.RUNNING
            return row.holder
        time.sleep(0.1)
    raise AssertionError("no worker got into the blocked segment")


def _taken_over_from(engine: Any, segment: int, first: str, *, within: float) -> str:
    """The worker holding ``segment`` once it is no longer ``first``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = next(r for r in leases.read_leases(engine, "m1") if r.segment == segment)
        if row.holder not in (None, first):
            return row.holder
        time.sleep(0.1)
    raise AssertionError(f"segment {segment} was never taken over from {first} in {within:g} s")


def _lock_waiters(url: str, query: str, *, seconds: float) -> list[int]:
    """How many sessions of the database wait on a lock, sampled for ``seconds``."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(int(rows_of(url, query)[0][0]))
        time.sleep(0.1)
    return seen
