"""Expand/contract benchmark on PostgreSQL: the column backfill against one plain UPDATE (the
ceiling, which locks), and what a concurrent single-row writer waits meanwhile.

    .venv/bin/python bench/expand.py --rows 500000

Builds an ``orders`` table (id, amount numeric(12,2), note) with generate_series in a database it
creates and drops. Phase 1: ``ALTER ADD COLUMN`` + one ``UPDATE orders SET amount_cents =
round(amount * 100)``. Phase 2 (column dropped, table vacuumed): Shiftover's expand, sync triggers
and keyset backfill, then validation. A writer thread updates random rows' ``amount`` throughout;
its p99 and worst latency are reported per phase. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftover.control.store import open_store
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target, expand, install_sync
from shiftover.schema.spec import parse_expand_contract
from shiftover.schema.validate import validate_columns

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class Writer:
    """One application writer: single-row updates of ``amount`` in autocommit transactions."""

    def __init__(self, url: str, rows: int) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.rows, self.stop = rows, threading.Event()
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        rnd = random.Random(1)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.monotonic()
                with conn.begin():
                    conn.execute(
                        sa.text("UPDATE orders SET amount = :a WHERE id = :i"),
                        {"a": rnd.randint(0, 99_999) / 100, "i": rnd.randint(1, self.rows)},
                    )
                self.latencies.append(time.monotonic() - t0)
                time.sleep(0.002)

    def measure(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        self.latencies = []
        if not lat:
            return {"writes": 0}
        return {"writes": len(lat), "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000, "max_ms": lat[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    db = f"so_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    url = sa.make_url(ADMIN).set(database=db).render_as_string(hide_password=False)
    try:
        print(json.dumps(run(url, args.rows, args.chunk)))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))


def run(url: str, rows: int, chunk: int) -> dict[str, Any]:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), note text)"))
        conn.execute(
            sa.text(
                "INSERT INTO orders SELECT g, (g * 37 % 100000) / 100.0, 'note ' || g FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
    vacuum(engine)
    writer = Writer(url, rows)
    writer.thread.start()
    time.sleep(1.0)
    idle = writer.measure()

    t0 = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders ADD COLUMN amount_cents bigint"))
        conn.execute(sa.text("UPDATE orders SET amount_cents = round(amount * 100)"))
    plain_s = time.monotonic() - t0
    time.sleep(0.3)  # the write that waited behind the UPDATE lands in this phase
    plain = writer.measure()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN amount_cents"))
    vacuum(engine)
    writer.measure()

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
            "backfill": {"chunk_rows": chunk},
        }
    )  # fmt: skip
    control = Path(f"/tmp/{spec.name}-control.db")
    store = open_store(f"sqlite:///{control}")
    target = Target.of(engine, spec)
    t0 = time.monotonic()
    expand(target, spec)
    install_sync(target, spec)
    expand_s = time.monotonic() - t0
    report = backfill_columns(target, spec, store.engine)
    time.sleep(0.3)
    backfill = writer.measure()
    t0 = time.monotonic()
    validation = validate_columns(target, spec)
    validate_s = time.monotonic() - t0
    writer.stop.set()
    writer.thread.join()
    store.engine.dispose()
    control.unlink(missing_ok=True)  # the control store is this run's only
    return {
        "rows": rows,
        "chunk_rows": chunk,
        "plain_update_s": round(plain_s, 2),
        "plain_update_rows_per_s": round(rows / plain_s),
        "expand_and_sync_s": round(expand_s, 3),
        "backfill_s": round(report.seconds, 2),
        "backfill_rows_per_s": round(rows / report.seconds),
        "backfill_vs_plain": round(plain_s / report.seconds, 2),
        "validate_s": round(validate_s, 2),
        "validation_passed": validation.passed,
        "writer_idle": idle,
        "writer_during_plain_update": plain,
        "writer_during_backfill": backfill,
    }


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE orders"))


if __name__ == "__main__":
    main()
