"""Where the application's p99 goes while the column backfill runs: idle and batch windows interleaved.

    .venv/bin/python bench/expand_interleaved.py --rows 1000000 --chunks 10000,5000,2000 --cycles 12
    .venv/bin/python bench/expand_interleaved.py --engine mariadb --rows 500000

``bench/expand.py`` measures idle first and the backfill minutes later; on a shared machine the
background load drifts in between (seen here: the idle p99 of one run 2.3 ms, of another a few
minutes later 9.9 ms).
Here one writer process (``bench/expand.py``'s: single-row updates of ``amount``, each its own
transaction) runs throughout while windows of ``--window`` seconds cycle through: idle, then
Shiftover's column backfill batches (``update_batch`` on one ``BatchSession``, the sync triggers
installed and off for the batches, as in a run) of each ``--chunks`` size, back to back with no
rest. Each configuration sits next to an idle window under the same background load, and the
medians over ``--cycles`` cycles are compared. When a pass over the table ends, the new column is
set back to NULL outside any window (its writes are not measured) and the next pass starts.

The question it answers: does a smaller batch bring the writer's p99 during the batches down (less
WAL waiting to be flushed per commit), and how much of the rows/s does it cost? A rest between
batches (``nice_ratio``) cannot bring a p99 down unless fewer than 1 % of the writes overlap a
batch, so the p99 during the batches themselves is what a pace can reach.
Prints each configuration's median p99 against the median idle p99, its rows/s, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from expand import FILL, TABLE, Writer, analyze, bench_database  # bench/expand.py

from shiftover.engines import dialect_for
from shiftover.schema.backfill import BatchSession, update_batch
from shiftover.schema.columns import Target, expand, install_sync
from shiftover.schema.spec import parse_expand_contract


def run(url: str, kind: str, rows: int, chunks: list[int], window: float, cycles: int) -> dict[str, Any]:
    engine = dialect_for(url).create_engine(sa.make_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(TABLE[kind].format(null="")))
        conn.execute(sa.text(FILL[kind].format(n=int(rows))))
    analyze(engine, kind)
    spec = parse_expand_contract(
        {
            "kind": "expand_contract",
            "name": f"bench-{uuid.uuid4().hex[:6]}",
            "database": {"url": url, "table": "orders"},
            "key": ["id"],
            "operations": [
                {"op": "change_column", "column": "amount", "to": "amount_cents", "type": "bigint",
                 "up": "round(amount * 100)", "down": "amount_cents / 100.0", "reversible": True},
            ],
        }
    )  # fmt: skip
    target = Target.of(engine, spec)
    install_sync(target, spec, expand(target, spec))
    table = sa.Table("orders", sa.MetaData(), autoload_with=engine)
    writer = Writer(url, rows)
    writer.measure()
    time.sleep(1.0)
    writer.measure()  # the connection warmed up
    p99: dict[str, list[float]] = {"idle": [], **{str(c): [] for c in chunks}}
    rate: dict[str, list[float]] = {str(c): [] for c in chunks}
    lo: Any = None
    with BatchSession(engine) as session:
        for _ in range(cycles):
            for label in ["idle", *map(str, chunks)]:
                t0, done, ended = time.monotonic(), 0, False
                if label == "idle":
                    time.sleep(window)
                while label != "idle" and time.monotonic() - t0 < window and not ended:
                    lo, updated = update_batch(session.connection(), target, spec, table, lo, int(label))
                    done, ended = done + updated, lo is None
                seconds = time.monotonic() - t0
                p99[label].append(writer.measure()["p99_ms"])
                if label != "idle":
                    rate[label].append(done / seconds)
                if ended:  # a new pass: the column emptied (sync off in this session), not measured
                    conn = session.connection()
                    with conn.begin():
                        conn.execute(sa.text("UPDATE orders SET amount_cents = NULL"))
                    analyze(engine, kind)
                    writer.measure()
    writer.stop()
    engine.dispose()
    idle = statistics.median(p99["idle"])
    return {
        "engine": kind,
        "rows": rows,
        "window_s": window,
        "cycles": cycles,
        "idle_p99_ms": round(idle, 2),
        "idle_p99_ms_windows": [round(x, 2) for x in p99["idle"]],
        "batches": {
            label: {
                "p99_ms": round(statistics.median(p99[label]), 2),
                "p99_vs_idle": round(statistics.median(p99[label]) / idle, 2),
                "rows_per_s": round(statistics.median(rate[label])),
                "p99_ms_windows": [round(x, 2) for x in p99[label]],
            }
            for label in map(str, chunks)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["postgresql", "mariadb"], default="postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunks", default="10000,5000,2000", help="batch sizes, comma-separated")
    parser.add_argument("--window", type=float, default=4.0, help="seconds per window")
    parser.add_argument("--cycles", type=int, default=12)
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    with bench_database(args.engine) as url:
        figures = run(url, args.engine, args.rows, chunks, args.window, args.cycles)
    print(f"{args.engine}: writer p99 idle {figures['idle_p99_ms']} ms (median of {args.cycles} windows)")
    for label, m in figures["batches"].items():
        print(
            f"  during {label}-row batches: p99 {m['p99_ms']} ms = {m['p99_vs_idle']}x idle (goal <= 1.5x), "
            f"{m['rows_per_s']:,} rows/s"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
