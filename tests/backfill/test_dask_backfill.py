"""Mode ``dask`` of ``backfill.distributed`` on a real ``dask.distributed`` cluster: a ``dask
scheduler`` and two ``dask worker`` processes started here as separate OS processes, each running
the one worker loop. A 200k-row PG -> PG backfill through the ``backfill`` flow ends identical
(count and md5 of the ordered rows, read with plain SQL on both sides) with checkpoints adding up
to the table's rows; then one Dask worker process is SIGKILLed mid-segment: the other takes its
segment over from the checkpoint and the run ends the same way, no row read more than once more
than needed (the shared budget's granted rows)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dask_cluster import DaskCluster, Parent, dask_cluster

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.budget import read_budget
from shiftover.backfill.workers import distributed_progress, distributed_settings, plan_distributed
from shiftover.control.store import open_store
from shiftover.diff import diff_tables
from shiftover.errors import SpecError
from shiftover.migration import open_migration
from shiftover.phases import Phase
from shiftover.spec import parse_spec

from .conftest import ITEMS_DDL, fill_items, items_spec, rows_of, run_sql, write_items_spec

# SO_SCALE_ROWS=2000000 runs the 2M-row case by hand
N, CHUNK, TTL = int(os.environ.get("SO_SCALE_ROWS", 200_000)), 2_000, 3.0
FINGERPRINT = "SELECT count(*), md5(string_agg(id || ':' || n || ':' || coalesce(v, '~'), ',' ORDER BY id)) FROM items"


def checkpoint_sum(store_url: str, name: str) -> int:
    rows = rows_of(store_url, f"SELECT coalesce(sum(rows_copied), 0) FROM so_checkpoints WHERE migration = '{name}'")
    return int(rows[0][0])


@pytest.mark.flows
def test_backfill_flow_in_mode_dask(
    prefect_harness: None,
    pg_database: Callable[[], str],
    dask_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shiftover.flows.backfill import backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": 2, "mode": "dask", "scheduler": "${SO_TEST_DASK_SCHEDULER}", "lease_ttl_seconds": 5}
    spec = write_items_spec(tmp_path, source, target, "dk", chunk_rows=10_000, distributed=distributed)
    store = open_store(store_url)
    store.register("dk", {})
    store.transition("dk", Phase.DUAL_WRITING, "test")
    # both by reference: the scheduler resolved by this run, the control store by each Dask worker
    with dask_cluster(dask_home, env={"SO_TEST_CONTROL_URL": store_url}) as cluster:
        monkeypatch.setenv("SO_TEST_DASK_SCHEDULER", cluster.address)
        monkeypatch.setenv("SO_TEST_CONTROL_URL", store_url)
        summary = backfill(spec, "${SO_TEST_CONTROL_URL}")

    assert summary["complete"] and summary["segments"] == 4, summary
    assert summary["rows_copied"] == N
    assert summary["rows_inserted"] == N  # the loops' own reports, returned through Dask
    assert store.phase("dk") == Phase.BACKFILLED
    assert rows_of(target, FINGERPRINT) == rows_of(source, FINGERPRINT)
    assert rows_of(target, FINGERPRINT)[0][0] == N
    assert checkpoint_sum(store_url, "dk") == N


def test_a_sigkilled_dask_worker_leaves_its_segment_to_the_other(
    pg_database: Callable[[], str], dask_home: Path
) -> None:
    from shiftover.backfill.dask_workers import run_dask_backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    with dask_cluster(dask_home) as cluster:
        distributed = {"workers": 2, "mode": "dask", "scheduler": cluster.address, "segments_per_worker": 3}
        distributed["lease_ttl_seconds"] = TTL
        # one budget of 40k rows/s for both loops, so the copy lasts long enough to kill one mid-segment
        data = items_spec(source, target, "dkill", chunk_rows=CHUNK, max_rows_per_second=40_000)
        data["backfill"]["distributed"] = distributed
        migration = open_migration(parse_spec(data), store_url)
        settings = distributed_settings(migration.spec.backfill)
        assert settings is not None and settings.mode == "dask"
        plan = plan_distributed(migration, settings.segments)
        assert len(plan) == 6
        parent = Parent(lambda: run_dask_backfill(migration, settings, every=0.5))
        try:
            segment = _wait_mid_segment(migration.store.engine, "dkill", cluster, "dw0")
            victim = cluster.kill_worker("dw0")
            at_kill = next(r for r in leases.read_leases(migration.store.engine, "dkill") if r.segment == segment)
        finally:
            parent.join()
        result = parent.result(cluster)

    assert victim.returncode == -signal.SIGKILL
    assert at_kill.state == checkpoints.RUNNING and at_kill.rows_copied >= 2 * CHUNK
    assert "-dw0-" in str(at_kill.holder)
    # every report came back from the survivor: its own loop, and the dead worker's task Dask re-ran there
    assert result.errors == [] and result.reports, (result.errors, result.reports)
    assert all("-dw1-" in r["worker"] for r in result.reports), result.reports
    taken = [s for r in result.reports for s in r["taken_over"]]
    assert segment in taken, result.reports
    progress = distributed_progress("dkill", migration.store.engine)
    assert progress.complete and progress.segments_failed == 0 and progress.held == {}
    assert progress.rows_copied == N and checkpoint_sum(store_url, "dkill") == N  # the killed chunk counted once
    assert result.rows_copied == N
    assert rows_of(target, FINGERPRINT) == rows_of(source, FINGERPRINT)
    diff = diff_tables(migration.source, migration.target, migration.mapping, migration.spec.validation)
    assert diff.differences == []
    # both loops drew every chunk from the one budget: all rows, plus at most a chunk per segment (a
    # segment's last chunk reserves a whole one) and the dead loop's chunk in flight and its next one
    budget = read_budget(migration.store.engine, "dkill")
    assert budget is not None and N <= budget.granted_rows <= N + (len(plan) + 2) * CHUNK, budget
    print(f"reports {result.reports}, rounds {result.rounds}, loops not ended {result.unfinished_loops}, {budget}")


def test_loops_that_fail_are_resubmitted_then_reported(
    pg_database: Callable[[], str], dask_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control store reaches the Dask workers as a reference their environment lacks: every loop
    fails on its worker (the reference is resolved there, not by the parent), the parent submits
    the remaining rounds, then stops and reports each loop's error; nothing is copied."""
    from shiftover.backfill.dask_workers import MAX_ROUNDS, run_dask_backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 1_000)
    run_sql(target, ITEMS_DDL)
    with dask_cluster(dask_home) as cluster:
        monkeypatch.setenv("SO_TEST_ONLY_IN_THE_PARENT", store_url)
        data = items_spec(source, target, "dfail", chunk_rows=500)
        data["backfill"]["distributed"] = {"workers": 2, "mode": "dask", "scheduler": cluster.address}
        migration = open_migration(parse_spec(data), store_url)
        settings = distributed_settings(migration.spec.backfill)
        assert settings is not None
        plan_distributed(migration, settings.segments)
        lines: list[str] = []
        result = run_dask_backfill(
            migration, settings, control_url="${SO_TEST_ONLY_IN_THE_PARENT}", every=0.2, log=lines.append
        )

    assert result.rounds == MAX_ROUNDS and result.reports == []
    assert len(result.errors) == 2 * MAX_ROUNDS, result.errors
    assert all("SO_TEST_ONLY_IN_THE_PARENT is not set" in e for e in result.errors), result.errors
    assert any("rounds with segments left; stopping" in line for line in lines), lines
    assert result.progress is not None and not result.progress.complete and result.rows_copied == 0
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def _wait_mid_segment(engine: Any, name: str, cluster: DaskCluster, worker: str) -> int:
    """The segment the loop on Dask worker ``worker`` holds once two chunks of it are committed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for row in leases.read_leases(engine, name):
            mine = row.holder is not None and f"-{worker}-" in row.holder
            if mine and row.state == checkpoints.RUNNING and row.rows_copied >= 2 * CHUNK:
                return row.segment
        time.sleep(0.05)
    raise AssertionError(f"the loop on {worker} never got mid-segment\n{cluster.logs()}")


def test_a_scheduler_nobody_answers_is_refused_naming_the_field(dask_home: Path) -> None:
    from prefect_stack import free_port

    from shiftover.backfill.dask_workers import connect_scheduler

    with pytest.raises(SpecError, match="no Dask scheduler answered") as caught:
        connect_scheduler(f"tcp://127.0.0.1:{free_port()}", timeout=2)
    assert caught.value.field == "backfill.distributed.scheduler"


def test_a_scheduler_reference_is_checked_once_resolved(dask_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftover.backfill.dask_workers import connect_scheduler

    monkeypatch.setenv("SO_TEST_BAD_SCHEDULER", "127.0.0.1:8786")
    with pytest.raises(
        SpecError, match=r"\$\{SO_TEST_BAD_SCHEDULER\}: '127.0.0.1:8786' is not a Dask scheduler address"
    ) as caught:
        connect_scheduler("${SO_TEST_BAD_SCHEDULER}")
    assert caught.value.field == "backfill.distributed.scheduler"
    assert "127.0.0.1:8786" in str(caught.value)


@pytest.mark.flows
def test_a_silent_scheduler_is_refused_before_the_phase_moves(
    prefect_harness: None, pg_database: Callable[[], str], dask_home: Path, tmp_path: Path
) -> None:
    from prefect_stack import free_port

    from shiftover.backfill import backfill_status
    from shiftover.flows.backfill import backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": 2, "mode": "dask", "scheduler": f"tcp://127.0.0.1:{free_port()}"}
    spec = write_items_spec(tmp_path, source, target, "silent", distributed=distributed)
    store = open_store(store_url)
    store.register("silent", {})
    store.transition("silent", Phase.DUAL_WRITING, "test")
    with pytest.raises(SpecError, match=r"spec field 'backfill\.distributed\.scheduler': no Dask scheduler answered"):
        backfill(spec, store_url)
    assert store.phase("silent") == Phase.DUAL_WRITING
    assert backfill_status(store.engine, "silent").segments == 0
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
