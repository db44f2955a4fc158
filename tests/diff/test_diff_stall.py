"""A diff worker alive but stuck loses its segment: two worker processes diff on PostgreSQL while
reading one key of the source waits on an advisory lock the test holds (the spec maps the source's
``v`` through a function that takes the lock for that key), so the worker screening that segment
blocks, heartbeat alive. Past ``stall_seconds`` without a returned query it
gives the segment up (its query cancelled) and the other worker takes it over; every segment is recorded once and the
differences are those of a plain comparison of the rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.control.worker_processes import wait_for_workers
from shiftover.diff import new_run_id
from shiftover.diff.distributed import aggregate_report, plan_distributed_diff, read_segments, start_diff_workers
from shiftover.diff.failures import DiffProgress
from shiftover.migration import open_migration
from shiftover.spec import parse_spec

from .test_diff_distributed import _found, _plain_diff, _rows_pg, _segments_done_once, _spec

N, TTL, STALL, LOCK = 40_000, 3.0, 6.0, 4242
GATE = """CREATE OR REPLACE FUNCTION so_gate(k bigint, v varchar) RETURNS varchar LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF k = {key} THEN PERFORM pg_advisory_xact_lock_shared({lock}); END IF;
  RETURN v;
END $$"""


def _fill(url: str, *, gate: bool) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))"))
        conn.execute(sa.text(f"INSERT INTO items SELECT g, g * 7 % 1000, 'v' || g FROM generate_series(1, {N}) g"))
        if gate:
            conn.execute(sa.text(GATE.format(key=-1, lock=LOCK)))
        else:  # the target: two rows missing, two changed
            conn.execute(sa.text("DELETE FROM items WHERE id IN (5, 33333)"))
            conn.execute(sa.text("UPDATE items SET v = 'changed' WHERE id IN (7, 20002)"))


def test_a_diff_worker_blocked_in_a_query_loses_its_segment(pg_database: Callable[[], str]) -> None:
    source, target, store = pg_database(), pg_database(), pg_database()
    _fill(source, gate=True)
    _fill(target, gate=False)
    spec = _spec(source, target, workers=2, lease_ttl_seconds=TTL, stall_seconds=STALL)
    # the source's v is read through the gate: the diff's source queries call it for every row they read
    spec["columns"] = [{"name": "id"}, {"name": "n"}, {"name": "v", "sql": "so_gate(id, v)"}]
    m = open_migration(parse_spec(spec), store)
    settings = m.spec.validation.distributed
    assert settings is not None
    run_id = new_run_id()
    planned = plan_distributed_diff(m, settings, run_id)
    ranges = [rng for rng, _ in DiffProgress(m.store.engine, m.name, run_id).load_segments()]
    blocked = planned.segments // 2
    lo = ranges[blocked].lo
    assert lo is not None
    key = int(lo[0]) + 10
    conninfo = sa.make_url(source).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(GATE.format(key=key, lock=LOCK).encode())
    lock = psycopg.connect(conninfo, autocommit=True)
    lock.execute("SELECT pg_advisory_lock(%s)", (LOCK,))

    procs = start_diff_workers(m, 2, planned.job, ttl=TTL, prefix="st")
    try:
        first = _holder(m, run_id, blocked, other_than=None, within=60)
        second = _holder(m, run_id, blocked, other_than=first, within=STALL + 4 * TTL + 20)
        # the stuck query was cancelled: only the new holder's query waits on the lock (never two)
        waiting = _lock_waiters(conninfo, seconds=3.0)
    finally:
        lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        lock.close()
    exits = wait_for_workers(procs)
    assert max(waiting) == 1, waiting
    assert all(e.returncode == 0 for e in exits), [e.stderr[-2000:] for e in exits]
    by_worker = {e.report["worker"]: e.report for e in exits if e.report}
    assert blocked in by_worker[first]["stalled"] and blocked in by_worker[first]["lost"], by_worker
    assert blocked in by_worker[second]["taken_over"], by_worker
    stalls = ControlStore(m.store.engine).audit_entries(m.name, "segment_stalled")
    assert [(e["actor"], e["detail"]["segment"]) for e in stalls] == [(first, blocked)]

    _segments_done_once(m, run_id)
    done = next(r for r in read_segments(m.store.engine, m.name, run_id) if r.segment == blocked)
    assert done.done_by == second
    report = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    expected = _plain_diff(_rows_pg(source), _rows_pg(target))
    assert expected == {(5, "missing"), (33333, "missing"), (7, "changed"), (20002, "changed")}
    assert _found(report) == expected


def _holder(m: Any, run_id: str, segment: int, *, other_than: str | None, within: float) -> str:
    """The worker holding ``segment``, once one other than ``other_than`` does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = next(r for r in read_segments(m.store.engine, m.name, run_id) if r.segment == segment)
        if row.holder is not None and row.holder != other_than:
            return row.holder
        time.sleep(0.1)
    raise AssertionError(f"segment {segment} was not taken by a worker other than {other_than} in {within:g} s")


def _lock_waiters(conninfo: str, *, seconds: float) -> list[int]:
    """How many sessions of the database wait on a lock, sampled for ``seconds``."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    seen, deadline = [], time.monotonic() + seconds
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query).fetchone()
            seen.append(int(row[0]) if row else 0)
            time.sleep(0.1)
    return seen
