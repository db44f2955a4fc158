"""Scale-out benchmark of the validation diff: a PG -> PG checksum diff in one process
(``diff_tables``, threads) against the distributed diff (``validation.distributed``) with 1, 2 and
4 worker OS processes claiming segments by lease from a PostgreSQL control store.

    .venv/bin/python bench/scaleout_diff.py --rows 1000000

Builds the 7-column ``orders`` table of bench/backfill.py in throwaway databases (dropped on
exit), copies it to the target and plants ``--differences`` changed rows spread over the key
span (so some segments are narrowed to rows, as in a real validation). Every run plans the same
``--segments`` segments; each distributed run is a new diff run id. A worker's wall time includes
its process start (imports, connections, reading both tables' catalogs): each run reports the
parent's plan, the slowest worker's claim loop and what is left (process start, aggregation), and
the workers' summed time screening/narrowing segments and recording results in the control store.
Every run must find the same differences as the in-process diff, or the bench fails. Ends with
one JSON line.
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


def open_migration_for(source: str, target: str, control: str, segments: int, workers: int | None) -> Any:
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec

    validation: dict[str, Any] = {"segments": segments, "repair": False}
    if workers:
        validation["distributed"] = {"workers": workers, "segments_per_worker": 1, "lease_ttl_seconds": 30}
    spec = {
        "name": f"diff-bench-{workers or 0}",
        "source": {"url": source, "table": "orders"},
        "target": {"url": target, "table": "orders"},
        "key": "id",
        "validation": validation,
    }
    return open_migration(parse_spec(spec), control)


def found(report: Any) -> list[tuple[Any, str]]:
    return sorted((d.key, d.kind) for d in report.differences)


def in_process(source: str, target: str, control: str, segments: int, rows: int) -> tuple[dict[str, Any], Any]:
    from shiftover.diff import diff_tables

    m = open_migration_for(source, target, control, segments, None)
    started = time.perf_counter()
    report = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    seconds = time.perf_counter() - started
    return {
        "run": "in-process",
        "threads": 2,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
        "segments": report.segments,
        "differences": len(report.differences),
    }, report


def distributed(
    source: str, target: str, control: str, segments: int, rows: int, workers: int
) -> tuple[dict[str, Any], Any]:
    """``diff_distributed`` in its three steps, to read the workers' own reports."""
    from shiftover.diff import new_run_id
    from shiftover.diff.distributed import aggregate_report, plan_distributed_diff, run_workers

    m = open_migration_for(source, target, control, segments, workers)
    run_id = new_run_id()
    started = time.perf_counter()
    planned = plan_distributed_diff(m, m.spec.validation.distributed, run_id)
    planning = time.perf_counter() - started
    exits = run_workers(m, m.spec.validation.distributed, planned.job)
    report = aggregate_report(planned.plan, m.store.engine, m.name, run_id, planned.narrowing)
    seconds = time.perf_counter() - started
    reports = [e.report for e in exits if e.report]
    loop = max(r["seconds"] for r in reports)
    return {
        "run": f"{workers} worker process(es)",
        "workers": workers,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
        "segments": report.segments,
        "segments_per_worker": sorted((len(r["segments"]) for r in reports), reverse=True),
        "differences": len(report.differences),
        "plan_seconds": round(planning, 3),
        # the slowest worker's claim loop; the rest of the wall time is process start (interpreter,
        # imports, connections, the worker's plan) and the parent's aggregation
        "worker_loop_seconds": round(loop, 3),
        "outside_loop_seconds": round(seconds - planning - loop, 3),
        "diff_seconds_all_workers": round(sum(r["diff_seconds"] for r in reports), 3),
        "record_seconds_all_workers": round(sum(r["record_seconds"] for r in reports), 3),
    }, report


def plant(target: str, rows: int, differences: int) -> None:
    step = max(1, rows // differences)
    bb.run(target, f"UPDATE orders SET status = 'tampered' WHERE id % {step} = 7 AND id <= {rows}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--differences", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    load = os.getloadavg()
    dbs = bb.Databases()
    try:
        source, target, control = dbs.pg(), dbs.pg(), dbs.pg()
        for url in (source, target):
            bb.run(url, bb.PG_DDL.format(name="orders"), bb.PG_FILL.format(name="orders", rows=args.rows))
        plant(target, args.rows, args.differences)
        for url in (source, target):
            bb.vacuum(url)
        base, base_report = in_process(source, target, control, args.segments, args.rows)
        print(json.dumps(base), flush=True)
        results = [base]
        for workers in args.workers:
            run, report = distributed(source, target, control, args.segments, args.rows, workers)
            if found(report) != found(base_report):
                raise SystemExit(f"{run['run']} found other differences than the in-process diff")
            run["vs_in_process"] = round(run["rows_per_second"] / base["rows_per_second"], 2)
            results.append(run)
            print(json.dumps(run), flush=True)
    finally:
        dbs.drop_all()
    figures = {
        "bench": "scaleout_diff",
        "rows": args.rows,
        "segments": args.segments,
        "differences": base["differences"],
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "in_process_rows_per_second": base["rows_per_second"],
        "workers": {str(r["workers"]): r["rows_per_second"] for r in results[1:]},
        "ratio_vs_in_process": {str(r["workers"]): r["vs_in_process"] for r in results[1:]},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
