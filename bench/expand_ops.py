"""Index and constraint operations of expand/contract against their plain (blocking) forms: what a
concurrent single-row writer waits while each runs, on PostgreSQL and MariaDB.

    .venv/bin/python bench/expand_ops.py --rows 300000

Builds ``orders`` (id, amount numeric(12,2) NULL, note) in a database it creates and drops, per
engine. For each operation, first the plain statement (PostgreSQL: CREATE INDEX, ADD CHECK, SET NOT
NULL, each scanning under its lock; MariaDB: ADD INDEX with ALGORITHM=COPY), then it is undone and
Shiftover's form runs (``build_indexes`` / ``enforce_constraints``: CONCURRENTLY, NOT VALID +
VALIDATE, the helper CHECK; INPLACE/LOCK=NONE) with a 500 ms lock timeout. A writer thread updates
random rows' ``note`` throughout; its worst and p99 latency per phase, each phase's seconds and
Shiftover's lock time-outs end in one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftover.schema.columns import Target
from shiftover.schema.constraints import build_indexes, enforce_constraints
from shiftover.schema.locking import DdlReport
from shiftover.schema.spec import ExpandContractSpec, parse_expand_contract

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/mysql",
}
FILL = {
    "postgresql": "INSERT INTO orders SELECT i, (i * 37 % 100000) / 100.0, 'n' || i FROM generate_series(1, {n}) i",
    "mariadb": "INSERT INTO orders SELECT seq, (seq * 37 % 100000) / 100.0, concat('n', seq) FROM seq_1_to_{n}",
}


class Writer:
    def __init__(self, url: str, rows: int) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.rows, self.stop = rows, threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        rnd = random.Random(1)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    with conn.begin():
                        conn.execute(
                            sa.text("UPDATE orders SET note = 'w' WHERE id = :i"), {"i": rnd.randint(1, self.rows)}
                        )
                except sa.exc.DBAPIError:
                    self.errors += 1
                self.latencies.append(time.monotonic() - t0)
                time.sleep(0.002)


def phase(writer: Writer, work: Callable[[], Any]) -> dict[str, float]:
    start = len(writer.latencies)
    t0 = time.monotonic()
    report = work()
    seconds = time.monotonic() - t0
    time.sleep(0.05)
    lat = sorted(writer.latencies[start:]) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    out = {
        "seconds": round(seconds, 3),
        "writer_max_ms": round(lat[-1] * 1000, 1),
        "writer_p99_ms": round(p99 * 1000, 1),
    }
    return out | ({"lock_timeouts": report.lock_timeouts} if isinstance(report, DdlReport) else {})


def spec_for(url: str, operations: list[dict[str, Any]]) -> ExpandContractSpec:
    return parse_expand_contract(
        {
            "kind": "expand_contract",
            "name": "bench-ops",
            "database": {"url": url, "table": "orders"},
            "key": ["id"],
            "operations": operations,
            "lock": {"timeout_ms": 500, "attempts": 100, "backoff_ms": 50},
        }
    )


def run(engine_name: str, rows: int) -> dict[str, Any]:
    admin = sa.create_engine(SERVERS[engine_name], isolation_level="AUTOCOMMIT")
    db = f"so_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    url = sa.make_url(SERVERS[engine_name]).set(database=db).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    out: dict[str, Any] = {}
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2) NULL, note varchar(40))")
            )
            conn.execute(sa.text(FILL[engine_name].format(n=rows)))
        writer = Writer(url, rows)
        writer.thread.start()
        time.sleep(0.5)
        out["idle"] = phase(writer, lambda: time.sleep(1.0))

        def sql(*statements: str) -> Callable[[], None]:
            def go() -> None:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for s in statements:
                        conn.exec_driver_sql(s)

            return go

        index = spec_for(url, [{"op": "create_index", "name": "ix_orders_note", "columns": ["note"]}])
        if engine_name == "postgresql":
            out["index_plain"] = phase(writer, sql("CREATE INDEX ix_orders_note ON orders (note)"))
            sql("DROP INDEX ix_orders_note")()
            check = spec_for(url, [{"op": "add_check", "name": "ck_amount", "expression": "amount >= 0"}])
            out["check_plain"] = phase(writer, sql("ALTER TABLE orders ADD CONSTRAINT ck_amount CHECK (amount >= 0)"))
            sql("ALTER TABLE orders DROP CONSTRAINT ck_amount")()
            out["check_shiftover"] = phase(writer, lambda: enforce_constraints(Target.of(engine, check), check))
            out["not_null_plain"] = phase(writer, sql("ALTER TABLE orders ALTER COLUMN amount SET NOT NULL"))
            sql("ALTER TABLE orders ALTER COLUMN amount DROP NOT NULL")()
        else:
            out["index_plain"] = phase(
                writer, sql("ALTER TABLE orders ADD INDEX ix_orders_note (note), ALGORITHM=COPY")
            )
            sql("ALTER TABLE orders DROP INDEX ix_orders_note")()
        out["index_shiftover"] = phase(writer, lambda: build_indexes(Target.of(engine, index), index))
        not_null = spec_for(url, [{"op": "set_not_null", "column": "amount"}])
        out["not_null_shiftover"] = phase(writer, lambda: enforce_constraints(Target.of(engine, not_null), not_null))
        writer.stop.set()
        writer.thread.join()
        out["writer_errors"] = writer.errors
    finally:
        engine.dispose()
        with admin.connect() as conn:
            force = " WITH (FORCE)" if engine_name == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}{force}"))
        admin.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--engines", default="postgresql,mariadb")
    args = parser.parse_args()
    result = {"rows": args.rows, **{name: run(name, args.rows) for name in args.engines.split(",")}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
