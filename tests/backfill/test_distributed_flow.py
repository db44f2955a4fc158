"""The distributed backfill under Prefect's test harness: the backfill flow with ``distributed``
(worker processes over a PostgreSQL control store) and the ``backfill-worker`` flow."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from shiftover.backfill import backfill_status, checkpoints, leases
from shiftover.backfill.budget import read_budget
from shiftover.backfill.workers import plan_distributed, worker_name
from shiftover.control.lease import acquire_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.errors import ControlStoreError, LeaseHeldError, SpecError
from shiftover.migration import load_migration
from shiftover.phases import Phase

from .conftest import ITEMS_DDL, child_pid, control_url, fill_items, items_spec, rows_of, run_sql, write_items_spec

pytestmark = pytest.mark.flows


def _setup(pg_database, tmp_path, name: str, rows: int):  # type: ignore[no-untyped-def]
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, rows)
    run_sql(target, ITEMS_DDL)
    spec = write_items_spec(tmp_path, source, target, name, chunk_rows=1000)
    store = open_store(store_url)
    store.register(name, {})
    return source, target, spec, store_url, store


def test_backfill_flow_distributed_over_worker_processes(prefect_harness, pg_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prefect.artifacts import Artifact

    from shiftover.flows.backfill import backfill
    from shiftover.story import artifact_key

    source, target, spec, url, store = _setup(pg_database, tmp_path, "dist", 30_000)
    store.transition("dist", Phase.DUAL_WRITING, "test")
    summary = backfill(spec, url, distributed=2)

    assert summary["complete"] and summary["rows_copied"] == 30_000 and summary["segments"] == 4
    assert store.phase("dist") == Phase.BACKFILLED
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
    status = backfill_status(store.engine, "dist")
    assert status.complete and status.rows_copied == 30_000
    progress = Artifact.get(artifact_key("backfill", "dist", "progress"))
    assert progress is not None and float(progress.data) == 100.0


def test_backfill_worker_flow_copies_a_planned_backfill(prefect_harness, pg_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.backfill_worker import backfill_worker

    source, target, spec, url, store = _setup(pg_database, tmp_path, "wk", 10_000)
    plan_distributed(load_migration(spec, url), 3)
    report = backfill_worker(spec, url, worker_id="w1", lease_ttl_seconds=10)
    assert report["worker"] == "w1" and report["rows_read"] == 10_000 and len(report["segments"]) == 3
    late = backfill_worker(spec, url, lease_ttl_seconds=10)  # no id given: its flow run's, nothing left to claim
    assert late["worker"].startswith("flow-run/") and late["segments"] == [] and late["rows_read"] == 0
    assert backfill_status(store.engine, "wk").complete
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)


def test_a_second_distributed_run_is_refused_while_another_holds_it(prefect_harness, pg_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.backfill import backfill

    _, target, spec, url, store = _setup(pg_database, tmp_path, "two", 2_000)
    store.transition("two", Phase.DUAL_WRITING, "test")
    acquire_lease(store.engine, "two", "flow-run/first")  # the first run, still copying
    with pytest.raises(LeaseHeldError, match="flow-run/first"):
        backfill(spec, url, distributed=2)
    assert store.phase("two") == Phase.DUAL_WRITING
    assert backfill_status(store.engine, "two").segments == 0  # nothing planned, no worker started
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def test_sqlite_control_store_is_refused_before_the_phase_moves(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, control_store: ControlStore, tmp_path
) -> None:
    from shiftover.flows.backfill import backfill

    source, target = pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    spec = write_items_spec(tmp_path, source, target, "lite")
    control_store.register("lite", {})
    control_store.transition("lite", Phase.DUAL_WRITING, "test")
    with pytest.raises(ControlStoreError, match="PostgreSQL or MariaDB"):
        backfill(spec, control_url(control_store), distributed=2)
    assert control_store.phase("lite") == Phase.DUAL_WRITING
    assert backfill_status(control_store.engine, "lite").segments == 0
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def test_the_specs_distributed_key_is_refused_on_sqlite_naming_the_field(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, control_store: ControlStore, tmp_path
) -> None:
    from shiftover.flows.backfill import backfill

    source, target = pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    spec = write_items_spec(tmp_path, source, target, "lite2", distributed={"workers": 2})
    control_store.register("lite2", {})
    control_store.transition("lite2", Phase.DUAL_WRITING, "test")
    with pytest.raises(SpecError, match=r"spec field 'backfill.distributed': .*PostgreSQL or MariaDB.*is SQLite"):
        backfill(spec, control_url(control_store))
    assert control_store.phase("lite2") == Phase.DUAL_WRITING
    assert backfill_status(control_store.engine, "lite2").segments == 0


def test_the_specs_distributed_key_runs_worker_processes_under_one_budget(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, tmp_path
) -> None:
    from shiftover.flows.backfill import backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 12_000)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": 2, "mode": "processes", "segments_per_worker": 3, "lease_ttl_seconds": 5}
    spec = write_items_spec(
        tmp_path, source, target, "dspec", chunk_rows=1000, max_rows_per_second=50_000, distributed=distributed
    )
    store = open_store(store_url)
    store.register("dspec", {})
    store.transition("dspec", Phase.DUAL_WRITING, "test")
    summary = backfill(spec, store_url)  # no parameter: the spec's key decides
    assert summary["complete"] and summary["rows_copied"] == 12_000 and summary["segments"] == 6
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
    budget = read_budget(store.engine, "dspec")  # both processes drew from the one budget
    assert budget is not None and 12_000 <= budget.granted_rows <= 12_000 + 6 * 1000


def test_a_stalled_worker_process_is_ended_and_named_in_the_summary(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, tmp_path
) -> None:
    """The one worker process is SIGSTOPped mid-segment: the flow ends it (its lease lapsed), a new
    round's worker finishes its segment, and the summary names it; every row is copied."""
    from shiftover.flows.backfill import backfill

    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, 40_000)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": 1, "segments_per_worker": 4, "lease_ttl_seconds": 2}
    spec = write_items_spec(
        tmp_path, source, target, "stall", chunk_rows=1000, max_rows_per_second=5_000, distributed=distributed
    )
    store = open_store(store_url)
    store.register("stall", {})
    store.transition("stall", Phase.DUAL_WRITING, "test")
    victim, stopped = worker_name("worker", 0), {}

    def stop_victim_mid_segment() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for row in leases.read_leases(store.engine, "stall"):
                if row.holder == victim and row.state == checkpoints.RUNNING and row.rows_copied >= 2000:
                    stopped["pid"] = child_pid(victim)
                    os.kill(stopped["pid"], signal.SIGSTOP)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_victim_mid_segment, daemon=True)
    watcher.start()
    summary = backfill(spec, store_url)
    watcher.join(timeout=5)

    assert stopped, "the worker was never caught mid-segment"
    assert list(summary["stalled_workers"]) == [victim] and "lapsed" in summary["stalled_workers"][victim]
    assert not Path(f"/proc/{stopped['pid']}").exists()
    assert summary["complete"] and summary["rows_copied"] == 40_000
    checksum = "SELECT count(*), md5(string_agg(id || ':' || n || ':' || v, ',' ORDER BY id)) FROM items"
    assert rows_of(target, checksum) == rows_of(source, checksum)
    assert store.phase("stall") == Phase.BACKFILLED


def test_the_ui_throttle_variable_reaches_distributed_workers_through_the_flag(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, tmp_path
) -> None:
    from prefect.variables import Variable

    from shiftover.backfill import make_throttle, set_throttle
    from shiftover.flows.backfill import VariableMirror, throttle_variable_name

    _, _, spec, url, store = _setup(pg_database, tmp_path, "mirror", 10)
    migration = load_migration(spec, url)
    mirror = VariableMirror(migration)
    assert mirror() is None  # no variable: nothing written
    Variable.set(throttle_variable_name("mirror"), {"paused": True, "max_rows_per_second": 5000}, overwrite=True)
    assert mirror() == {"paused": True, "max_rows_per_second": 5000}
    worker_view = make_throttle(migration, shared=True).settings()  # what each worker process reads
    assert worker_view.paused and worker_view.max_rows_per_second == 5000
    set_throttle(store.engine, "mirror", paused=False, actor="cli")  # an operator resumes from the CLI
    assert mirror() is None  # the variable did not change: the CLI's resume stands
    assert not make_throttle(migration, shared=True).settings().paused


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"backfill": {"distributed": {"workers": 2}}}, "backfill.distributed"),
        ({"validation": {"distributed": {"workers": 2}}}, "validation.distributed"),
    ],
)
def test_a_run_is_refused_before_dual_write_when_its_workers_need_a_shared_store(  # type: ignore[no-untyped-def]
    prefect_harness, pg_database, control_store: ControlStore, tmp_path, extra, field
) -> None:
    """The stage flows refuse a SQLite control store for workers; the whole run must refuse it
    before its first stage, not after dual-write is on and the application writes both stores."""
    from shiftover.flows.migrate import migrate

    source, target = pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    spec = tmp_path / "early.yaml"
    spec.write_text(json.dumps({**items_spec(source, target, "early"), **extra}))
    with pytest.raises(SpecError, match=rf"spec field '{field}': .*is SQLite.*--control-url"):
        migrate(str(spec), control_url(control_store), auto_approve=True)
    assert not control_store.has_migration("early")  # refused before it was registered
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
