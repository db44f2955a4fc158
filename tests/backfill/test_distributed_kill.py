"""A distributed backfill over three worker OS processes sharing a PostgreSQL control store: one
is SIGKILLed mid-segment, the survivors take its segment over once its lease expires; the
tables end identical (zero diff) and the checkpoints add up to the table's rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.budget import read_budget
from shiftover.backfill.workers import (
    copy_claimed_segments,
    distributed_progress,
    plan_distributed,
    start_worker_processes,
    wait_for_workers,
    worker_name,
)
from shiftover.control.store import open_store
from shiftover.diff import diff_tables
from shiftover.errors import ControlStoreError
from shiftover.migration import Migration, open_migration
from shiftover.spec import parse_spec

from .conftest import ITEMS_DDL, control_url, fill_items, items_spec, rows_of, run_sql

N, CHUNK, TTL = 200_000, 2_000, 3.0


def _migration(source: str, target: str, store_url: str, **backfill: Any) -> Migration:
    return open_migration(parse_spec(items_spec(source, target, "m1", **backfill)), store_url)


def test_three_workers_survive_a_sigkill(pg_database: Callable[[], str]) -> None:
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    # a cap shared by the three workers (the control store's budget) so the copy lasts long enough
    # to kill a worker mid-segment (45k rows/s: the 15k per worker this test had before the budget)
    migration = _migration(source, target, store_url, chunk_rows=CHUNK, max_rows_per_second=45_000)
    engine = migration.store.engine
    plan = plan_distributed(migration, 6)
    assert len(plan) == 6

    procs = start_worker_processes(migration, 3, ttl=TTL, prefix="w")
    victim = procs[0]
    victim_id = worker_name("w", 0)
    try:
        killed_segment = _wait_mid_segment(engine, victim_id, victim)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        at_kill = next(r for r in leases.read_leases(engine, "m1") if r.segment == killed_segment)
        reports = []
        for proc in procs[1:]:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err.decode()[-2000:]
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert victim.returncode == -signal.SIGKILL
    assert at_kill.state == checkpoints.RUNNING and at_kill.rows_copied > 0
    taken = [s for r in reports for s in r["taken_over"]]
    assert killed_segment in taken, reports

    progress = distributed_progress("m1", engine)
    assert progress.complete and progress.segments_failed == 0 and progress.held == {}
    assert progress.rows_copied == N  # checkpoints add up: the dead worker's unrecorded chunk counted once
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == N
    diff = diff_tables(migration.source, migration.target, migration.mapping, migration.spec.validation)
    assert diff.differences == []
    # the three processes drew every chunk from the one budget: all rows, plus at most a chunk per
    # segment (a segment's last chunk reserves a whole one) and the dead worker's chunk in flight
    # and its next reservation
    budget = read_budget(engine, "m1")
    assert budget is not None and N <= budget.granted_rows <= N + (len(plan) + 2) * CHUNK, budget


def _wait_mid_segment(engine: Any, worker: str, proc: subprocess.Popen[bytes]) -> int:
    """The segment ``worker`` holds once it has committed at least two chunks of it, not yet done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        for row in leases.read_leases(engine, "m1"):
            if row.holder == worker and row.state == checkpoints.RUNNING and row.rows_copied >= 2 * CHUNK:
                return row.segment
        time.sleep(0.05)
    raise AssertionError("the worker never got mid-segment")


def test_in_process_worker_loop_copies_everything(pg_database: Callable[[], str]) -> None:
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 20_000)
    run_sql(target, ITEMS_DDL)
    migration = _migration(source, target, store_url, chunk_rows=1_000)
    plan_distributed(migration, 4)
    first = copy_claimed_segments(migration, "a", ttl=10)
    second = copy_claimed_segments(migration, "b", ttl=10)
    assert first.rows_read == 20_000 and len(first.segments) == 4
    assert second.segments == []  # nothing left to claim
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)


def test_sqlite_control_store_refuses_distributed_mode(
    pg_database: Callable[[], str], tmp_path: Any, control_store: Any
) -> None:
    source, target = pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    migration = _migration(source, target, control_url(control_store))
    with pytest.raises(ControlStoreError, match="PostgreSQL or MariaDB"):
        plan_distributed(migration, 2)
    assert open_store(control_url(control_store)).has_migration("m1")


def test_no_worker_command_line_holds_the_control_store_password(pg_database: Callable[[], str]) -> None:
    """Any local user reads a process's argv (``ps``): the spec and the control store's URL reach a
    worker on stdin. (The local PostgreSQL trusts 127.0.0.1, so a made-up password still connects.)"""
    source, target, store_db = pg_database(), pg_database(), pg_database()
    fill_items(source, 2_000)
    run_sql(target, ITEMS_DDL)
    store_url = store_db.replace("postgres@", "postgres:planted-Secret-42@", 1)
    assert "planted-Secret-42" in store_url
    migration = _migration(source, target, store_url, chunk_rows=500)
    plan_distributed(migration, 2)
    procs = start_worker_processes(migration, 2, ttl=TTL, prefix="p")
    try:
        for proc in procs:
            argv = _cmdline(proc.pid)
            assert "planted-Secret-42" not in argv and "p-" in argv, argv
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert "planted-Secret-42" not in out.decode() + err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert distributed_progress("m1", migration.store.engine).rows_copied == 2_000


def _cmdline(pid: int) -> str:
    """The process's argv as ``ps`` shows it (read again while the kernel is still filling it in)."""
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode()
        if text or time.monotonic() > deadline:
            return text
        time.sleep(0.01)


def test_waiting_reads_every_worker_pipe_meanwhile() -> None:
    """A worker writing more than a pipe holds (64 KiB) to stderr ends and is read whole, next to
    another worker; one that fails is reported with its stderr, without a report."""
    chatty = "import sys; sys.stderr.write('x' * 1_000_000); sys.stderr.flush(); print('{\"worker\": \"c\"}')"
    scripts = [chatty, chatty, "import sys; sys.exit('boom')"]
    procs = [
        subprocess.Popen([sys.executable, "-c", s], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in scripts
    ]
    ticks: list[float] = []
    exits = wait_for_workers(procs, tick=lambda: ticks.append(time.monotonic()), every=0.01)
    assert [e.report for e in exits] == [{"worker": "c"}, {"worker": "c"}, None]
    assert [len(e.stderr) for e in exits[:2]] == [1_000_000, 1_000_000]
    assert exits[2].returncode == 1 and "boom" in exits[2].stderr
    assert ticks  # the progress was refreshed while they ran


def test_an_in_process_backfill_waits_for_workers_still_holding_segments(pg_database: Callable[[], str]) -> None:
    """A distributed run's workers outlive a crashed parent and keep their segments' leases; an
    in-process backfill started meanwhile is not fenced by those leases, so it is refused, naming
    the segment and its holder, before it copies anything. Once the lease lapses it runs, and the
    checkpoints add up to the table's rows exactly (nothing counted twice)."""
    from shiftover.backfill.run import run_backfill
    from shiftover.errors import SegmentsLeasedError

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 20_000)
    run_sql(target, ITEMS_DDL)
    migration = _migration(source, target, store_url, chunk_rows=1_000)
    plan_distributed(migration, 4)
    orphan = leases.claim_segment(migration.store.engine, "m1", "process/orphan", ttl=1.5)
    assert orphan is not None
    with pytest.raises(SegmentsLeasedError) as caught:
        run_backfill(migration)
    assert caught.value.held.keys() == {orphan.segment} and "process/orphan" in str(caught.value)
    assert rows_of(target, "SELECT count(*) FROM items") == [(0,)]  # refused before any copy
    time.sleep(1.6)
    summary = run_backfill(migration)
    assert summary.complete and summary.rows_copied == 20_000
    assert checkpoints.backfill_status(migration.store.engine, "m1").rows_copied == 20_000
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
