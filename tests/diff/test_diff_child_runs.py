"""Mode ``deployment`` of ``validation.distributed`` on a real Prefect server: the validate flow's
checksum gate plans the diff, starts one ``diff-worker`` child run per worker through
``run_deployment`` onto the ``shiftover`` process pool (two ``prefect worker`` processes started
here), waits on the control store and reports the differences a plain comparison of the tables
finds; one worker machine dies holding a segment (its flow-run process and its Prefect worker,
SIGKILL) and the survivor redoes that segment. The control store's URL reaches the children as a
``${NAME}`` reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from backfill.test_child_runs import _kill_worker_machine
from prefect_stack import REPO, prefect_stack

from shiftover.control import schema
from shiftover.control.store import ControlStore, open_store
from shiftover.diff.distributed import read_segments
from shiftover.phases import Phase

from .conftest import bring_to_backfilled
from .test_diff_distributed import _fill_pg, _plain_diff, _plant_pg, _rows_pg

pytestmark = pytest.mark.flows

# SO_SCALE_ROWS=2000000 runs the 2M-row case by hand
WORKERS, ROWS = 2, int(os.environ.get("SO_SCALE_ROWS", 60_000))
PARENT = (
    "import json, sys; from shiftover.flows.validate import validate; "
    "state = validate(sys.argv[1], sys.argv[2], return_state=True); "
    "print(json.dumps({'failed': state.is_failed(), 'message': state.message}))"
)


def prepared(
    pg_database: Callable[[], str], tmp_path: Path, name: str, lease_ttl_seconds: float
) -> tuple[ControlStore, str, Path, set[tuple[int, str]], str]:
    """Source, target (differences planted) and control store on PostgreSQL; a spec diffing through
    child runs, registered and at ``backfilled``. Returns the store, its URL, the spec's path, the
    differences a plain row comparison finds, and the target's URL."""
    source, target, store_url = pg_database(), pg_database(), pg_database()
    _fill_pg(source, ROWS)
    _fill_pg(target, ROWS)
    _plant_pg(target)
    expected = _plain_diff(_rows_pg(source), _rows_pg(target))
    spec = {
        "name": name,
        "source": {"url": source, "table": "items"},
        "target": {"url": target, "table": "items"},
        "key": "id",
        "validation": {
            "repair": False,
            "distributed": {"workers": WORKERS, "mode": "deployment", "lease_ttl_seconds": lease_ttl_seconds},
        },
        "gates": {"validate": ["checksum"]},
    }
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(json.dumps(spec))
    store = open_store(store_url)
    store.register(name, spec)
    bring_to_backfilled(store, name)
    return store, store_url, spec_path, expected, target


def test_the_validate_flow_diffs_through_child_runs(pg_database: Callable[[], str], tmp_path: Path) -> None:
    store, store_url, spec_path, expected, _ = prepared(pg_database, tmp_path, "kids-diff", 5)

    with prefect_stack(tmp_path / "prefect-home", {"SO_TEST_CONTROL_URL": store_url}) as stack:
        for i in range(WORKERS):
            stack.start_worker(f"w{i}", limit=1)
        stack.prefect("deploy", "--name", "diff-worker", "--no-prompt")
        parent = subprocess.run(
            [sys.executable, "-c", PARENT, str(spec_path), "${SO_TEST_CONTROL_URL}"],
            cwd=REPO,
            env=stack.env,
            capture_output=True,
            timeout=300,
        )
        assert parent.returncode == 0, parent.stderr.decode()[-3000:] + "\n" + stack.logs()
        outcome = json.loads(parent.stdout.decode().strip().splitlines()[-1])
        runs = list(stack.flow_runs())

    assert outcome["failed"] and "differing key(s)" in outcome["message"], outcome
    assert store.phase("kids-diff") == Phase.BACKFILLED
    f = schema.validation_failures
    with store.engine.connect() as conn:
        run_id = conn.execute(sa.select(f.c.run_id).where(f.c.migration == "kids-diff").limit(1)).scalar_one()
        rows = conn.execute(sa.select(f.c.key_json, f.c.kind).where(f.c.migration == "kids-diff")).all()
    assert {(json.loads(k)[0], kind) for k, kind in rows} == expected and len(rows) == len(expected)
    segments = read_segments(store.engine, "kids-diff", run_id)
    assert all(r.state in ("equal", "differ") for r in segments)
    assert {r.done_by for r in segments} <= {f"flow-run/{r['id']}" for r in runs}  # child runs did them
    children = [r for r in runs if r["name"].startswith("diff-worker-r1-")]
    assert len(children) == WORKERS and all(r["parent_task_run_id"] for r in children)


def test_a_dead_child_loses_its_segment_to_the_survivor(pg_database: Callable[[], str], tmp_path: Path) -> None:
    store, store_url, spec_path, expected, target = prepared(pg_database, tmp_path, "kids-kill", 4)

    with prefect_stack(tmp_path / "prefect-home", {"SO_TEST_CONTROL_URL": store_url}) as stack:
        for i in range(WORKERS):
            stack.start_worker(f"w{i}", limit=1)
        stack.prefect("deploy", "--name", "diff-worker", "--no-prompt")
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, str(spec_path), "${SO_TEST_CONTROL_URL}"],
            cwd=REPO,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        blocker = None
        try:
            run_id = _wait_for_plan(store, "kids-kill", parent)
            # the parent has read the target: hold its rows so each child waits mid-segment
            blocker = psycopg.connect(
                sa.make_url(target).set(drivername="postgresql").render_as_string(hide_password=False)
            )
            blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            victim, segment = _wait_for_holders(store, "kids-kill", run_id, parent)
            killed = _kill_worker_machine(victim.removeprefix("flow-run/"), stack)
            blocker.rollback()
            out, err = parent.communicate(timeout=300)
        finally:
            if blocker is not None:
                blocker.close()
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        assert parent.returncode == 0, err.decode()[-3000:] + "\n" + stack.logs()
        outcome = json.loads(out.decode().strip().splitlines()[-1])
        runs = {r["id"]: r for r in stack.flow_runs()}

    assert killed, "no process of the victim's run was found to kill"
    assert outcome["failed"] and "differing key(s)" in outcome["message"], outcome
    f = schema.validation_failures
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(f.c.key_json, f.c.kind).where(f.c.migration == "kids-kill")).all()
    assert {(json.loads(k)[0], kind) for k, kind in rows} == expected and len(rows) == len(expected)
    segments = read_segments(store.engine, "kids-kill", run_id)
    assert all(r.state in ("equal", "differ") and r.done_by != victim for r in segments)
    assert next(r for r in segments if r.segment == segment).done_by is not None
    # the dead machine's run never ended by itself: the parent cancelled it once every segment was done
    assert runs[victim.removeprefix("flow-run/")]["state_type"] == "CANCELLED"


def _wait_for_plan(store: Any, name: str, parent: subprocess.Popen[bytes]) -> str:
    seg = schema.diff_segments
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        with store.engine.connect() as conn:
            run_id = conn.execute(sa.select(seg.c.run_id).where(seg.c.migration == name).limit(1)).scalar()
        if run_id is not None:
            return str(run_id)
        time.sleep(0.05)
    raise AssertionError("the parent never planned the diff")


def _wait_for_holders(store: Any, name: str, run_id: str, parent: subprocess.Popen[bytes]) -> tuple[str, int]:
    """A child run holding a pending segment, once both children hold one."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        held = [r for r in read_segments(store.engine, name, run_id) if r.holder and r.state == "pending"]
        if len({r.holder for r in held}) == WORKERS:
            return str(held[0].holder), held[0].segment
        time.sleep(0.05)
    raise AssertionError("the children never held a segment each")
