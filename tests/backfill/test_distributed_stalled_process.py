"""A worker process that stalls does not make the parent wait forever. One is SIGSTOPped mid-segment
(its lease heartbeat stops; an open chunk transaction keeps its row locks, as a worker hung in a
database call would): ``run_worker_processes`` ends it once its lease lapsed and it renewed none for
a TTL (SIGTERM, then SIGKILL), its segment goes back to the pool, and the backfill completes: with a
second worker, that one takes the segment over; alone, a new round's worker does. The tables end
identical: count and an md5 of every row, computed by PostgreSQL on each side. Also the watch's
other cases: workers that never claim, and one that outlives the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.workers import (
    ProcessRounds,
    backfill_segments,
    copy_claimed_segments,
    distributed_progress,
    plan_distributed,
    run_worker_processes,
    worker_name,
)
from shiftover.control.worker_processes import SegmentView, StallWatch, wait_for_workers
from shiftover.migration import open_migration
from shiftover.spec import parse_spec

from .conftest import ITEMS_DDL, child_pid, fill_items, items_spec, rows_of, run_sql

N, CHUNK, TTL = 40_000, 1_000, 2.0
CHECKSUM = "SELECT count(*), md5(string_agg(id || ':' || n || ':' || coalesce(v, '-'), ',' ORDER BY id)) FROM items"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stalled_worker_process_is_ended_and_the_backfill_completes(
    workers: int, pg_database: Callable[[], str]
) -> None:
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    # a shared cap slow enough for the test to catch the first worker mid-segment
    spec = items_spec(source, target, "m1", chunk_rows=CHUNK, max_rows_per_second=5_000)
    migration = open_migration(parse_spec(spec), store_url)
    engine = migration.store.engine
    plan_distributed(migration, 4)
    victim = worker_name("worker", 0)
    stopped: dict[str, int] = {}

    def stop_victim_mid_segment() -> None:
        """The parent's progress tick: SIGSTOP the first worker once it holds a segment half-copied."""
        if stopped:
            return
        for row in leases.read_leases(engine, "m1"):
            if row.holder == victim and row.state == checkpoints.RUNNING and row.rows_copied >= 2 * CHUNK:
                pid = child_pid(victim)
                os.kill(pid, signal.SIGSTOP)
                stopped.update(pid=pid, segment=row.segment)
                return

    outcome: dict[str, Any] = {}

    def parent() -> None:
        outcome["ran"] = run_worker_processes(migration, workers, ttl=TTL, tick=stop_victim_mid_segment, grace=2.0)

    thread = threading.Thread(target=parent, daemon=True)  # a parent that waits forever fails the test, not the suite
    thread.start()
    thread.join(timeout=180)
    if thread.is_alive() and stopped:
        os.kill(stopped["pid"], signal.SIGKILL)  # so the waiting parent (and its survivors) can end
    assert not thread.is_alive(), "the parent still waits 180 s on"
    ran: ProcessRounds = outcome["ran"]

    assert stopped, "the first worker was never caught mid-segment"
    assert list(ran.stalled) == [victim], ran
    assert "lapsed" in ran.stalled[victim]
    ended = [e for e in ran.exits if e.stalled is not None]
    assert len(ended) == 1 and ended[0].returncode in (-signal.SIGTERM, -signal.SIGKILL), ended
    assert not Path(f"/proc/{stopped['pid']}").exists()  # ended and reaped
    reports = [e.report for e in ran.exits if e.report is not None]
    assert len(reports) == len(ran.exits) - 1
    assert stopped["segment"] in [s for r in reports for s in r["taken_over"]], reports
    assert ran.rounds == (2 if workers == 1 else 1)  # alone, it left its segment to a new round

    progress = distributed_progress("m1", engine)
    assert progress.complete and progress.segments_failed == 0
    assert progress.rows_copied == N  # the stopped worker's uncommitted chunk is counted once
    assert rows_of(target, CHECKSUM) == rows_of(source, CHECKSUM)
    assert rows_of(target, CHECKSUM)[0][0] == N


def test_workers_that_never_claim_or_outlive_the_work_are_ended(pg_database: Callable[[], str]) -> None:
    """Processes that never claim a segment (as if stuck connecting) are ended once no lease was
    live for ``idle`` seconds; one still running after every segment is done, ``linger`` seconds
    later. A sleeping process ends on the SIGTERM."""
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 2_000)
    run_sql(target, ITEMS_DDL)
    migration = open_migration(parse_spec(items_spec(source, target, "m1", chunk_rows=500)), store_url)
    engine = migration.store.engine
    plan_distributed(migration, 2)

    def read() -> list[SegmentView]:
        return backfill_segments(engine, "m1")

    stuck = [_sleeper() for _ in range(2)]
    watch = StallWatch(read, ["a", "b"], ttl=2, idle=3)
    exits = wait_for_workers(stuck, stalled=watch, every=0.2, grace=2)
    assert [e.returncode for e in exits] == [-signal.SIGTERM, -signal.SIGTERM]
    assert all(e.stalled and "no worker held a live lease" in e.stalled for e in exits), exits
    assert distributed_progress("m1", engine).segments_done == 0

    copy_claimed_segments(migration, "in-process", ttl=10)  # every segment done
    late = [_sleeper()]
    exits = wait_for_workers(late, stalled=StallWatch(read, ["c"], ttl=2, linger=2), every=0.2, grace=2)
    assert exits[0].returncode == -signal.SIGTERM
    assert exits[0].stalled is not None and "after every segment was finished" in exits[0].stalled
    assert rows_of(target, CHECKSUM) == rows_of(source, CHECKSUM)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
