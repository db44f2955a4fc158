"""Scale-out benchmark: a PG -> PG backfill in one process (``run_backfill``, threads) against the
distributed backfill with 1, 2 and 4 worker OS processes claiming segments by lease from a
PostgreSQL control store; control-store writes per second read from PostgreSQL's statistics.

    .venv/bin/python bench/scaleout.py --rows 400000

Builds the same 7-column ``orders`` table as bench/backfill.py in throwaway databases (dropped
on exit). Every run copies into a fresh, empty target and plans the same number of segments.
Worker processes are local (``python -m shiftover.backfill.workers``): their wall time includes
each process's start (imports, connections). ``--cap R`` adds runs of the same workers under one
shared budget of R rows/s (``backfill.budget``): the rows/s they reached against the cap and the
budget's writes. ``--child-run K`` starts a Prefect server (its own PostgreSQL database), the
``shiftover`` process pool and one ``prefect worker``, and times one segment copied by a
``backfill-worker`` child run (``run_deployment``, from the call until the run is final) against
the same segment copied in-process, K times each: the per-segment overhead of a child run.
``--dask-workers W`` (default 2, 0 for none) starts a ``dask scheduler`` and W ``dask worker``
processes (tests/dask_cluster.py) and copies the same table in mode ``dask``, one worker loop per
Dask worker, twice: cold (each worker's first task imports Shiftover) and warm.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_backfill", ROOT / "bench" / "backfill.py")
assert _spec is not None and _spec.loader is not None
bb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bb)


def spec_for(name: str, source: str, target: str, chunk_rows: int, cap: float | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"url": source, "table": "orders"},
        "target": {"url": target, "table": "orders"},
        "key": "id",
        "backfill": {"chunk_rows": chunk_rows, "concurrency": 2, **({"max_rows_per_second": cap} if cap else {})},
    }


def open_migration_for(
    name: str, source: str, target: str, control: str, chunk_rows: int, cap: float | None = None
) -> Any:
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec

    return open_migration(parse_spec(spec_for(name, source, target, chunk_rows, cap)), control)


def control_writes(control: str) -> int:
    """Rows written to so_checkpoints and so_throttle_budgets so far (updates + inserts), from
    PostgreSQL's statistics."""
    return int(
        bb.scalar(
            control,
            "SELECT coalesce(sum(n_tup_upd + n_tup_ins), 0) FROM pg_stat_user_tables "
            "WHERE relname IN ('so_checkpoints', 'so_throttle_budgets')",
        )
    )


def settle_stats() -> None:
    """Close this process's pooled connections (an idle backend keeps its table statistics up to
    10 s before flushing them; a closing one flushes at once), then let the flush land."""
    from shiftover.connect import dispose_engines

    dispose_engines()
    time.sleep(1.5)


def in_process(dbs: Any, source: str, control: str, segments: int, chunk_rows: int, rows: int) -> dict[str, Any]:
    from shiftover.backfill import run_backfill

    target = dbs.pg()
    bb.run(target, bb.PG_DDL.format(name="orders"))
    migration = open_migration_for("inproc", source, target, control, chunk_rows)
    settle_stats()
    migration = open_migration_for("inproc", source, target, control, chunk_rows)
    before = control_writes(control)
    started = time.monotonic()
    summary = run_backfill(migration, concurrency=segments // 2)
    seconds = time.monotonic() - started
    assert summary.complete and bb.pg_fingerprint(target) == bb.pg_fingerprint(source), "in-process copy differs"
    settle_stats()
    writes = control_writes(control) - before  # with the plan's inserts (planned inside run_backfill)
    return {
        "workers": f"in-process ({segments // 2} threads)",
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "segments": summary.segments,
        "control_writes": writes,
        "control_writes_per_second": round(writes / seconds, 1),
    }


def distributed(
    dbs: Any,
    source: str,
    control: str,
    workers: int,
    segments: int,
    chunk_rows: int,
    rows: int,
    cap: float | None = None,
) -> dict[str, Any]:
    from shiftover.backfill.workers import (
        distributed_progress,
        plan_distributed,
        start_worker_processes,
        wait_for_workers,
    )

    target = dbs.pg()
    bb.run(target, bb.PG_DDL.format(name="orders"))
    name = f"dist{workers}" + (f"cap{int(cap)}" if cap else "")
    migration = open_migration_for(name, source, target, control, chunk_rows, cap)
    plan = plan_distributed(migration, segments)
    settle_stats()
    migration = open_migration_for(name, source, target, control, chunk_rows, cap)
    before = control_writes(control)
    started = time.monotonic()
    exits = wait_for_workers(start_worker_processes(migration, workers, ttl=30))
    failed = [e.stderr[-2000:] for e in exits if e.report is None]
    if failed:
        raise RuntimeError(failed[0])
    reports = [e.report for e in exits if e.report is not None]
    seconds = time.monotonic() - started
    settle_stats()
    writes = control_writes(control) - before
    progress = distributed_progress(name, migration.store.engine)
    assert progress.complete and progress.rows_copied == rows, progress
    assert bb.pg_fingerprint(target) == bb.pg_fingerprint(source), "distributed copy differs"
    copying = max(r["seconds"] for r in reports)
    idle = max(r["seconds"] - r["copy_seconds"] for r in reports)
    from shiftover.backfill.budget import read_budget

    budget = read_budget(migration.store.engine, name)
    loop_rate = rows / copying
    return {
        "workers": workers,
        "cap": cap,
        "budget_grants": budget.grants if budget else 0,
        "loop_rows_per_second": round(loop_rate),  # inside the worker loops: the figure a cap bounds
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "worker_loop_seconds_max": round(copying, 2),  # inside the processes: without start-up
        "process_start_seconds": round(seconds - copying, 2),
        "idle_wait_seconds_max": round(idle, 2),  # a worker with nothing to claim polls for expired leases
        "segments": len(plan),
        "segments_per_worker": [len(r["segments"]) for r in reports],
        "control_writes": writes,
        "control_writes_per_second": round(writes / seconds, 1),
    }


def on_dask(
    dbs: Any, source: str, control: str, cluster: Any, segments: int, chunk_rows: int, rows: int, label: str
) -> dict[str, Any]:
    """The same copy with one worker loop per Dask worker (mode ``dask``: ``run_dask_backfill``) on a
    running cluster of separate ``dask worker`` processes; timed from submission to the parent's return."""
    from shiftover.backfill.dask_workers import run_dask_backfill
    from shiftover.backfill.workers import distributed_settings, plan_distributed
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec

    target = dbs.pg()
    bb.run(target, bb.PG_DDL.format(name="orders"))
    name = f"dask{label}"
    data = spec_for(name, source, target, chunk_rows)
    workers = len(cluster.workers)
    distributed = {"workers": workers, "mode": "dask", "scheduler": cluster.address}
    data["backfill"]["distributed"] = {**distributed, "segments_per_worker": max(segments // workers, 1)}
    migration = open_migration(parse_spec(data), control)
    settings = distributed_settings(migration.spec.backfill)
    assert settings is not None
    plan = plan_distributed(migration, segments)
    settle_stats()
    migration = open_migration(parse_spec(data), control)
    before = control_writes(control)
    started = time.monotonic()
    outcome = run_dask_backfill(migration, settings, control_url=control, every=0.2)
    seconds = time.monotonic() - started
    if outcome.errors:
        raise RuntimeError(outcome.errors[0])
    settle_stats()
    writes = control_writes(control) - before
    progress = distributed_progress_of(name, migration)
    assert progress.complete and progress.rows_copied == rows, progress
    assert bb.pg_fingerprint(target) == bb.pg_fingerprint(source), "dask copy differs"
    copying = max(r["seconds"] for r in outcome.reports)
    return {
        "workers": f"dask {workers} ({label})",
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "worker_loop_seconds_max": round(copying, 2),  # inside the loops: without the task's start
        "task_start_seconds": round(seconds - copying, 2),  # submit, unpickle/import, open the migration
        "segments": len(plan),
        "segments_per_worker": [len(r["segments"]) for r in outcome.reports],
        "control_writes": writes,
        "control_writes_per_second": round(writes / seconds, 1),
    }


def distributed_progress_of(name: str, migration: Any) -> Any:
    from shiftover.backfill.workers import distributed_progress

    return distributed_progress(name, migration.store.engine)


def dask_runs(dbs: Any, source: str, control: str, workers: int, segments: int, chunk_rows: int, rows: int) -> Any:
    """A scheduler and ``workers`` ``dask worker`` processes (tests/dask_cluster.py), then the copy
    twice on them: ``cold`` (the workers' first task imports Shiftover) and ``warm``."""
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from dask_cluster import dask_cluster

    began = time.monotonic()
    runs = []
    with dask_cluster(Path(tempfile.mkdtemp(prefix="so-bench-dask-")), workers=workers) as cluster:
        setup = time.monotonic() - began
        for label in ("cold", "warm"):
            runs.append(on_dask(dbs, source, control, cluster, segments, chunk_rows, rows, label))
            runs[-1]["cluster_setup_seconds"] = round(setup, 1)
            print(json.dumps(runs[-1]), flush=True)
    return runs


def child_run_overhead(dbs: Any, source: str, control: str, rows: int, chunk_rows: int, k: int) -> dict[str, Any]:
    """One segment of ``rows`` rows: in-process ``copy_claimed_segments`` against a ``backfill-worker``
    child run on a real Prefect server and process worker, ``k`` times each."""
    import statistics
    import tempfile

    _stack_spec = importlib.util.spec_from_file_location("prefect_stack", ROOT / "tests" / "prefect_stack.py")
    assert _stack_spec is not None and _stack_spec.loader is not None
    ps = importlib.util.module_from_spec(_stack_spec)
    sys.modules["prefect_stack"] = ps  # its dataclasses look their module up there
    _stack_spec.loader.exec_module(ps)
    from shiftover.backfill.workers import copy_claimed_segments, plan_distributed

    home = Path(tempfile.mkdtemp(prefix="so-bench-prefect-"))
    timings: dict[str, list[float]] = {"in_process": [], "child_run": []}
    started = time.monotonic()
    with ps.prefect_stack(home, {"SO_BENCH_CONTROL_URL": control}) as stack:
        stack.prefect("deploy", "--name", "backfill-worker", "--no-prompt")
        stack.start_worker("bench", limit=1)
        setup = time.monotonic() - started
        os.environ["PREFECT_API_URL"] = stack.api  # before Prefect is first imported here
        from prefect.deployments import run_deployment

        for i in range(k):
            for how in ("in_process", "child_run"):
                target = dbs.pg()
                bb.run(target, bb.PG_DDL.format(name="orders"))
                name = f"seg-{how}-{i}"
                spec = spec_for(name, source, target, chunk_rows)
                migration = open_migration_for(name, source, target, control, chunk_rows)
                plan_distributed(migration, 1)
                began = time.monotonic()
                if how == "in_process":
                    report = copy_claimed_segments(migration, f"bench-{i}", ttl=30)
                    assert report.rows_read == rows, report.as_dict()
                else:
                    spec_path = home / f"{name}.json"
                    spec_path.write_text(json.dumps(spec))
                    run = run_deployment(
                        "backfill-worker/backfill-worker",
                        parameters={"spec_path": str(spec_path), "control_url": "${SO_BENCH_CONTROL_URL}"},
                        timeout=None,
                        poll_interval=0.2,
                    )
                    assert run.state is not None and run.state.is_completed(), run.state  # type: ignore[union-attr]
                timings[how].append(time.monotonic() - began)
                assert bb.pg_fingerprint(target) == bb.pg_fingerprint(source), f"{how} copy differs"
                print(json.dumps({"segment_run": how, "i": i, "seconds": round(timings[how][-1], 2)}), flush=True)
    inproc, child = statistics.median(timings["in_process"]), statistics.median(timings["child_run"])
    return {
        "segment_rows": rows,
        "stack_setup_seconds": round(setup, 1),
        "in_process_seconds": [round(t, 2) for t in timings["in_process"]],
        "child_run_seconds": [round(t, 2) for t in timings["child_run"]],
        "in_process_median": round(inproc, 2),
        "child_run_median": round(child, 2),
        "child_run_overhead_seconds": round(child - inproc, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cap", type=float, default=None, help="also run the workers under one rows/s budget")
    parser.add_argument("--child-run", type=int, default=0, metavar="K", help="time K child runs of one segment")
    parser.add_argument("--segment-rows", type=int, default=200_000, help="rows of the --child-run segment")
    parser.add_argument("--dask-workers", type=int, default=2, help="dask worker processes (0: no dask run)")
    args = parser.parse_args()
    capped: list[dict[str, Any]] = []
    dask: list[dict[str, Any]] = []
    child: dict[str, Any] | None = None

    dbs = bb.Databases()
    try:
        source, control = dbs.pg(), dbs.pg()
        bb.run(source, bb.PG_DDL.format(name="orders"), bb.PG_FILL.format(name="orders", rows=args.rows))
        bb.vacuum(source)
        results = [in_process(dbs, source, control, args.segments, args.chunk_rows, args.rows)]
        print(json.dumps(results[-1]), flush=True)
        for workers in args.workers:
            results.append(distributed(dbs, source, control, workers, args.segments, args.chunk_rows, args.rows))
            print(json.dumps(results[-1]), flush=True)
        if args.dask_workers:
            dask = dask_runs(dbs, source, control, args.dask_workers, args.segments, args.chunk_rows, args.rows)
        if args.cap:
            for workers in args.workers:
                run = distributed(dbs, source, control, workers, args.segments, args.chunk_rows, args.rows, args.cap)
                capped.append(run)
                print(json.dumps(run), flush=True)
        if args.child_run:
            small = dbs.pg()
            bb.run(small, bb.PG_DDL.format(name="orders"), bb.PG_FILL.format(name="orders", rows=args.segment_rows))
            bb.vacuum(small)
            child = child_run_overhead(dbs, small, control, args.segment_rows, args.chunk_rows, args.child_run)
            print(json.dumps(child), flush=True)
    finally:
        dbs.drop_all()
    base = results[0]["rows_per_second"]
    figures = {
        "bench": "scaleout",
        "rows": args.rows,
        "chunk_rows": args.chunk_rows,
        "segments": args.segments,
        "cores": os.cpu_count(),
        "in_process_rows_per_second": base,
        "distributed": {
            str(r["workers"]): {
                "rows_per_second": r["rows_per_second"],
                "vs_in_process": round(r["rows_per_second"] / base, 2),
                "process_start_seconds": r["process_start_seconds"],
                "idle_wait_seconds_max": r["idle_wait_seconds_max"],
                "control_writes_per_second": r["control_writes_per_second"],
            }
            for r in results[1:]
        },
        "in_process_control_writes_per_second": results[0]["control_writes_per_second"],
        "dask": {
            r["workers"]: {
                "rows_per_second": r["rows_per_second"],
                "vs_in_process": round(r["rows_per_second"] / base, 2),
                "task_start_seconds": r["task_start_seconds"],
                "cluster_setup_seconds": r["cluster_setup_seconds"],
                "control_writes_per_second": r["control_writes_per_second"],
            }
            for r in dask
        },
        "capped": {
            str(r["workers"]): {
                "cap": r["cap"],
                "loop_rows_per_second": r["loop_rows_per_second"],
                "rows_per_second": r["rows_per_second"],
                "budget_grants": r["budget_grants"],
                "control_writes_per_second": r["control_writes_per_second"],
            }
            for r in capped
        },
        "child_run": child,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
