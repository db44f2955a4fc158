"""Probe: what drop_old_columns' ``LOCK TABLES ... WRITE`` costs the application on MariaDB. Not a
test. Per round: a fresh orders table of --rows rows taken to stop_sync, then drop_old_columns while
a reader (``SELECT`` by key) and a new-version writer (``UPDATE amount_cents``) run on their own
connections; it records how long the step took and each client's worst latency during it, against
their worst over the same time before it. ``--no-lock`` runs the statements as before (each alone,
no table lock) for comparison. Ends with one JSON line of medians and maxima.

    .venv/bin/python bench/probe_mariadb_drop_lock.py --rows 20000 --rounds 10
    .venv/bin/python bench/probe_mariadb_drop_lock.py --rows 20000 --rounds 10 --no-lock
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "schema"))
from conftest import create_orders, make_spec

from shiftover.control.store import open_store
from shiftover.schema import columns
from shiftover.schema.backfill import backfill_columns

ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"


class Client(threading.Thread):
    def __init__(self, url: str, sql: str, keys: int) -> None:
        super().__init__(daemon=True)
        self.url, self.sql, self.keys = url, sql, keys
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.errors: list[str] = []

    def run(self) -> None:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                t0 = time.monotonic()
                try:
                    conn.execute(sa.text(self.sql), {"k": i % self.keys + 1, "v": i})
                except sa.exc.DBAPIError as error:
                    self.errors.append(str(error.orig)[:100])
                self.samples.append((t0, time.monotonic() - t0))
                time.sleep(0.001)

    def worst(self, start: float, end: float) -> float:
        """The longest call overlapping [start, end]."""
        return max((s for t, s in self.samples if t <= end and t + s >= start), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-lock", action="store_true")
    args = parser.parse_args()
    if args.no_lock:
        plain = columns._drop_columns

        def unheld(*a, **k):  # type: ignore[no-untyped-def]
            k["held"] = False
            return plain(*a, **k)

        columns._drop_columns = unheld  # type: ignore[assignment]
    db = f"probe_drop_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {db}")
    url = f"{ADMIN}{db}"
    store = open_store(f"sqlite:////tmp/{db}-control.db")
    steps, reads, writes, reads_before, writes_before = [], [], [], [], []
    try:
        for _ in range(args.rounds):
            engine = create_orders(url, args.rows)
            spec = make_spec(url)
            target = columns.Target.of(engine, spec)
            columns.expand(target, spec)
            columns.install_sync(target, spec)
            assert backfill_columns(target, spec, store.engine).complete
            columns.stop_sync(target, spec)
            reader = Client(url, "SELECT note FROM orders WHERE id = :k AND :v > 0", args.rows)
            writer = Client(url, "UPDATE orders SET amount_cents = :v WHERE id = :k", args.rows)
            reader.start(), writer.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            columns.drop_old_columns(target, spec)
            t1 = time.monotonic()
            time.sleep(0.05)
            reader.stop.set(), writer.stop.set()
            reader.join(), writer.join()
            assert not reader.errors and not writer.errors, (reader.errors, writer.errors)
            steps.append(t1 - t0)
            reads.append(reader.worst(t0, t1))
            writes.append(writer.worst(t0, t1))
            reads_before.append(reader.worst(t0 - (t1 - t0) - 0.1, t0 - 0.1))
            writes_before.append(writer.worst(t0 - (t1 - t0) - 0.1, t0 - 0.1))
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE orders")
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {db}")

    def ms(xs: list[float]) -> dict[str, float]:
        return {"median_ms": round(statistics.median(xs) * 1000, 1), "max_ms": round(max(xs) * 1000, 1)}

    print(
        json.dumps(
            {
                "lock": not args.no_lock,
                "rows": args.rows,
                "rounds": args.rounds,
                "drop_old_columns": ms(steps),
                "reader_worst_during": ms(reads),
                "writer_worst_during": ms(writes),
                "reader_worst_before": ms(reads_before),
                "writer_worst_before": ms(writes_before),
            }
        )
    )


if __name__ == "__main__":
    main()
