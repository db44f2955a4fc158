"""Mode ``deployment`` of ``backfill.distributed`` on a real Prefect server: the parent ``backfill``
run starts one ``backfill-worker`` child run per worker through ``run_deployment`` onto the
``shiftover`` process pool, served by three ``prefect worker`` processes started here. One worker
machine dies mid-segment (its Prefect worker and its flow-run process, SIGKILL): its run stays
Running on the server, its lease expires, a survivor finishes its segment; the parent ends when
every segment is done, cancels the dead child, and the tables end identical with checkpoints
adding up to the table's rows. The control store's URL reaches the children as a ``${NAME}``
reference (resolved from each worker's environment), never as a value."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect_stack import REPO, Stack, prefect_stack

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.budget import read_budget
from shiftover.backfill.workers import distributed_progress
from shiftover.control.store import open_store
from shiftover.diff import diff_tables
from shiftover.migration import open_migration
from shiftover.phases import Phase
from shiftover.spec import load_spec

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql, write_items_spec

pytestmark = pytest.mark.flows

# SO_SCALE_ROWS=2000000 runs the 2M-row case by hand (about 70 s of copying at the cap)
N, CHUNK, TTL, WORKERS, CAP = int(os.environ.get("SO_SCALE_ROWS", 200_000)), 2_000, 3.0, 3, 30_000
PARENT = (
    "import json, sys; from shiftover.flows.backfill import backfill; "
    "print(json.dumps(backfill(sys.argv[1], sys.argv[2])))"
)


def test_child_runs_on_a_process_pool_survive_a_dead_worker(pg_database: Callable[[], str], tmp_path: Path) -> None:
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    distributed = {"workers": WORKERS, "mode": "deployment", "segments_per_worker": 2, "lease_ttl_seconds": TTL}
    spec_path = write_items_spec(
        tmp_path, source, target, "kids", chunk_rows=CHUNK, max_rows_per_second=CAP, distributed=distributed
    )
    store = open_store(store_url)
    store.register("kids", {})
    store.transition("kids", Phase.DUAL_WRITING, "test")
    began = time.monotonic()

    with prefect_stack(tmp_path / "prefect-home", {"SO_TEST_CONTROL_URL": store_url}) as stack:
        server_up = time.monotonic() - began
        for i in range(WORKERS):  # they start while the deployment is made; one child run each
            stack.start_worker(f"w{i}", limit=1)
        stack.prefect("deploy", "--name", "backfill-worker", "--no-prompt")
        ready = time.monotonic() - began
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, spec_path, "${SO_TEST_CONTROL_URL}"],
            cwd=REPO,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            victim_run, segment = _wait_mid_segment(store.engine, parent, stack)
            mid = time.monotonic() - began
            killed = _kill_worker_machine(victim_run, stack)
            out, err = parent.communicate(timeout=150 + N / CAP)
            ended = time.monotonic() - began
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        assert parent.returncode == 0, err.decode()[-3000:] + "\n" + stack.logs()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        runs = {r["id"]: r for r in stack.flow_runs()}
    seconds = time.monotonic() - began

    assert killed, "no process of the victim's run was found to kill"
    assert summary["complete"] and summary["rows_copied"] == N and summary["segments"] == 2 * WORKERS
    assert store.phase("kids") == Phase.BACKFILLED
    # the dead worker's run never ended by itself: the parent cancelled it once the plan was done
    assert runs[victim_run]["state_type"] == "CANCELLED", runs[victim_run]
    children = [r for r in runs.values() if r["name"].startswith("backfill-worker-r")]
    assert len(children) >= WORKERS
    assert all(r["parent_task_run_id"] for r in children)  # subflows of the parent run, shown under it
    progress = distributed_progress("kids", store.engine)
    assert progress.complete and progress.segments_failed == 0 and progress.held == {}
    assert progress.rows_copied == N  # checkpoints add up
    taken = [r for r in leases.read_leases(store.engine, "kids") if r.segment == segment]
    assert taken[0].state == checkpoints.DONE
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == N
    migration = open_migration(load_spec(spec_path), store_url)
    diff = diff_tables(migration.source, migration.target, migration.mapping, migration.spec.validation)
    assert diff.differences == []
    budget = read_budget(store.engine, "kids")
    assert budget is not None and N <= budget.granted_rows <= N + (2 * WORKERS + 2) * CHUNK
    print(
        f"server and pool {server_up:.1f} s, deployed {ready:.1f} s, killed at {mid:.1f} s, "
        f"parent ended {ended:.1f} s, whole test {seconds:.1f} s, children {len(children)}, parent's summary {summary}"
    )


def _wait_mid_segment(engine: Any, parent: subprocess.Popen[bytes], stack: Stack) -> tuple[str, int]:
    """A child run holding a segment with at least two chunks committed, not yet done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if parent.poll() is not None:
            err = parent.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            raise AssertionError(f"the parent ended early: {err}")
        for row in leases.read_leases(engine, "kids"):
            if row.holder and row.state == checkpoints.RUNNING and row.rows_copied >= 2 * CHUNK:
                return row.holder.removeprefix("flow-run/"), row.segment
        time.sleep(0.05)
    raise AssertionError("no child run got mid-segment\n" + stack.logs())


def _kill_worker_machine(run_id: str, stack: Stack) -> list[int]:
    """SIGKILL the run's processes and the Prefect worker that started them, as a dead machine."""
    mine = [p for p in _pids() if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in _environ(p)]
    workers = {w.pid for w in stack.workers}
    owners = {a for p in mine for a in _ancestors(p) if a in workers}
    for pid in [*owners, *mine]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for worker in stack.workers:
        if worker.pid in owners:
            worker.wait()
    return [*owners, *mine]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append(pid)
    return found
