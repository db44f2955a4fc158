"""Expand/contract benchmark on PostgreSQL, MariaDB or SQLite: the column backfill against one plain
UPDATE (the ceiling, which locks), and what a concurrent single-row writer waits meanwhile.

    .venv/bin/python bench/expand.py --rows 2000000
    .venv/bin/python bench/expand.py --engine mariadb --rows 200000
    .venv/bin/python bench/expand.py --engine sqlite --rows 200000

Builds an ``orders`` table (id, amount numeric(12,2), note) in a database it creates and drops (a
temporary file for SQLite). Phase 1: ``ALTER ADD COLUMN`` + one ``UPDATE orders SET amount_cents =
round(amount * 100)``. Phase 2 (column dropped, table analysed): Shiftover's expand, sync triggers
and keyset backfill, then validation, then contract (``stop_sync``: sync triggers dropped, with
``--not-null`` ``amount`` made nullable first; then ``amount`` dropped) once the writer writes
``amount_cents`` instead, as the new application version does. A writer in its
own process (and connection) updates random rows throughout; its p99 and worst latency are
reported per phase, against idle, with the writes that failed (MariaDB's lock wait timeout,
SQLite's "database is locked" after its busy timeout). Goals (issue 13): backfill >= 0.5x the
plain UPDATE's rows/s, the writer's p99 during expand, backfill and contract <= 1.5x idle, and no
write waiting longer than the spec's lock timeout. SQLite has one writer at a time per database
file: every write transaction of Shiftover's (each DDL statement, each backfill batch) makes the
application's writes wait for it whole.
Prints those ratios, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftover.control.store import open_store
from shiftover.engines import dialect_for
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target, drop_old_columns, expand, install_sync, stop_sync
from shiftover.schema.spec import parse_expand_contract
from shiftover.schema.validate import validate_columns

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/mysql",
}
TABLE = {  # {null}: NOT NULL with --not-null
    "postgresql": "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2){null}, note text)",
    "mariadb": "CREATE TABLE orders (id bigint PRIMARY KEY, amount decimal(12,2){null}, note text)",
    "sqlite": "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(12,2){null}, note TEXT)",
}
FILL = {  # {n}: the row count
    "postgresql": "INSERT INTO orders SELECT g, (g * 37 % 100000) / 100.0, 'note ' || g FROM generate_series(1, {n}) g",
    "mariadb": "INSERT INTO orders SELECT seq, (seq * 37 % 100000) / 100.0, concat('note ', seq) FROM seq_1_to_{n}",
    "sqlite": "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) "
    "INSERT INTO orders SELECT x, (x * 37 % 100000) / 100.0, 'note ' || x FROM g",
}
BACKEND_PID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT connection_id()"}
ANALYZE = {"postgresql": "VACUUM ANALYZE orders", "mariadb": "ANALYZE TABLE orders", "sqlite": "ANALYZE orders"}


class Writer:
    """One application writer in its own process (an application does not share the migration's
    interpreter: in a thread, Shiftover's Python work held the GIL and the writes measured it):
    single-row updates of ``amount`` in autocommit transactions, latencies read per phase."""

    def __init__(self, url: str, rows: int) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=write_rows, args=(url, rows, child), daemon=True
        )
        self.process.start()
        self.backend_pid: int | None = self.pipe.recv()  # connected: its server session's id
        self.sampler: WaitSampler | None = None

    def measure(self) -> dict[str, Any]:
        self.pipe.send("measure")
        figures: dict[str, Any] = self.pipe.recv()
        if self.sampler is not None:
            figures["wait_samples"] = self.sampler.measure()
        return figures

    def write_column(self, column: str) -> None:
        """``amount_cents`` once the "new version" writes (before contract)."""
        self.pipe.send(column)

    def stop(self) -> None:
        self.pipe.send("stop")
        self.process.join()
        if self.sampler is not None:
            self.sampler.stop()


WAIT_QUERY = {  # the writer's session, while it runs a statement: what it waits for
    "postgresql": "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity "
    "WHERE pid = :pid AND state = 'active'",
    "mysql": "SELECT coalesce(nullif(state, ''), 'CPU') FROM information_schema.processlist "
    "WHERE id = :pid AND command = 'Query'",
}


class WaitSampler:
    """``--wait-events``: what the writer's server session is doing, sampled about every 2 ms while it
    runs a statement (PostgreSQL: ``wait_event_type:wait_event`` from ``pg_stat_activity``, "CPU"
    when it waits on nothing; MariaDB: the processlist's ``state``), counted per phase. It shows
    where the slow writes of a phase wait; it adds a session polling the server, so its runs'
    latencies are not the plain bench's."""

    def __init__(self, url: str, pid: int) -> None:
        self.engine = sa.create_engine(url, poolclass=NullPool)
        self.query = sa.text(WAIT_QUERY[dialect_for(url).name])
        self.pid = pid
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stopped.is_set():
                seen = conn.execute(self.query, {"pid": self.pid}).scalar()
                if seen is not None:
                    with self.lock:
                        self.counts[str(seen)] += 1
                time.sleep(0.002)

    def measure(self) -> dict[str, int]:
        with self.lock:
            counts, self.counts = dict(self.counts.most_common(8)), Counter()
        return counts

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.engine.dispose()


def write_rows(url: str, rows: int, pipe: Connection) -> None:
    # SQLite: Shiftover's own engine settings (WAL, 30 s busy timeout), as an application sharing the file would
    sqlite = url.startswith("sqlite")
    engine = dialect_for(url).create_engine(sa.make_url(url)) if sqlite else sa.create_engine(url, poolclass=NullPool)
    rnd = random.Random(1)
    latencies: list[float] = []
    failed = 0  # writes the server refused (lock wait timeout, database is locked)
    column = "amount"
    with engine.connect() as conn:
        pid = None if sqlite else conn.execute(sa.text(BACKEND_PID[dialect_for(url).name])).scalar()
        conn.commit()  # the query began a transaction: each write begins its own
        pipe.send(pid)
        while True:
            while pipe.poll():
                command = pipe.recv()
                if command == "stop":
                    return
                if command == "measure":
                    pipe.send(summary(latencies, failed))
                    latencies, failed = [], 0
                else:
                    column = command
            t0 = time.monotonic()
            cents, key = rnd.randint(0, 99_999), rnd.randint(1, rows)
            value = cents if column == "amount_cents" else cents / 100
            try:
                with conn.begin():
                    conn.execute(sa.text(f"UPDATE orders SET {column} = :v WHERE id = :i"), {"v": value, "i": key})
            except sa.exc.OperationalError:
                failed += 1
            latencies.append(time.monotonic() - t0)
            time.sleep(0.002)


def summary(latencies: list[float], failed: int) -> dict[str, Any]:
    lat = sorted(latencies)
    if not lat:
        return {"writes": 0, "failed": failed}
    return {
        "writes": len(lat),
        "failed": failed,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
        "max_ms": lat[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["postgresql", "mariadb", "sqlite"], default="postgresql")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument(
        "--nice-ratio", type=float, default=None, help="the spec's backfill.nice_ratio: rest after each batch"
    )
    parser.add_argument(
        "--wait-events", action="store_true", help="sample what the writer's server session waits for, per phase"
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long the idle baseline is measured")
    parser.add_argument(
        "--not-null", action="store_true", help="amount NOT NULL: contract makes it nullable first (MariaDB: a rebuild)"
    )
    args = parser.parse_args()
    with bench_database(args.engine) as url:
        figures = run(
            url,
            args.engine,
            args.rows,
            args.chunk,
            not_null=args.not_null,
            idle_seconds=args.idle_seconds,
            nice_ratio=args.nice_ratio,
            wait_events=args.wait_events,
        )
    print(
        f"{args.engine}: backfill {figures['backfill_rows_per_s']:,} rows/s vs one plain UPDATE "
        f"{figures['plain_update_rows_per_s']:,} rows/s: {figures['backfill_vs_plain']}x (goal >= 0.5x)"
    )
    for phase, ratio in figures["p99_vs_idle"].items():
        goal = "" if phase in ("plain_update", "idle_after_backfill") else " (goal <= 1.5x)"
        print(f"writer p99 during {phase}: {ratio}x idle{goal}")
    print(
        f"longest write during Shiftover's phases: {figures['longest_wait_ms']} ms "
        f"(lock timeout {figures['lock_timeout_ms']} ms)"
    )
    print(json.dumps(figures))


@contextmanager
def bench_database(engine: str) -> Iterator[str]:
    """A fresh database's URL (a server database, or a file in a temporary directory), dropped after."""
    if engine == "sqlite":
        folder = tempfile.mkdtemp(prefix="so_bench_")
        try:
            yield f"sqlite:///{folder}/orders.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    admin = sa.create_engine(SERVERS[engine], isolation_level="AUTOCOMMIT")
    db = f"so_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    try:
        yield sa.make_url(SERVERS[engine]).set(database=db).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if engine == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}{force}"))
        admin.dispose()


def run(
    url: str,
    kind: str,
    rows: int,
    chunk: int,
    *,
    not_null: bool = False,
    idle_seconds: float = 5.0,
    nice_ratio: float | None = None,
    wait_events: bool = False,
) -> dict[str, Any]:
    engine = dialect_for(url).create_engine(sa.make_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(TABLE[kind].format(null=" NOT NULL" if not_null else "")))
        conn.execute(sa.text(FILL[kind].format(n=int(rows))))
    analyze(engine, kind)
    writer = Writer(url, rows)
    if wait_events and writer.backend_pid is not None:
        writer.sampler = WaitSampler(url, writer.backend_pid)
    writer.measure()  # the connection's first writes warm it up
    time.sleep(idle_seconds)  # a baseline of a few hundred writes at least: its p99 is what the phases are held to
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
    analyze(engine, kind)
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
            "backfill": {"chunk_rows": chunk, "nice_ratio": nice_ratio},
        }
    )  # fmt: skip
    control = Path(f"/tmp/{spec.name}-control.db")
    store = open_store(f"sqlite:///{control}")
    target = Target.of(engine, spec)
    t0 = time.monotonic()
    expanded = install_sync(target, spec, expand(target, spec))
    expand_s = time.monotonic() - t0
    time.sleep(0.5)  # enough writes to measure the expand phase by
    expanding = writer.measure()
    report = backfill_columns(target, spec, store.engine)
    time.sleep(0.3)
    backfill = writer.measure()
    # idle again, the table as the backfill left it (twice the row versions, most pages dirty): how
    # much of the backfill's p99 is the table's new state (a buffer pool too small for it: every
    # write may read its page back and first write out a dirty one) rather than the batches running
    time.sleep(idle_seconds)
    after_backfill = writer.measure()
    t0 = time.monotonic()
    validation = validate_columns(target, spec)
    validate_s = time.monotonic() - t0
    writer.write_column("amount_cents")
    time.sleep(0.3)
    writer.measure()
    t0 = time.monotonic()
    contracted = drop_old_columns(target, spec, stop_sync(target, spec))
    contract_s = time.monotonic() - t0
    time.sleep(0.5)
    contracting = writer.measure()
    writer.stop()
    store.engine.dispose()
    control.unlink(missing_ok=True)  # the control store is this run's only
    engine.dispose()
    return {
        "engine": kind,
        "rows": rows,
        "chunk_rows": chunk,
        "nice_ratio": nice_ratio,
        "amount_not_null": not_null,
        "plain_update_s": round(plain_s, 2),
        "plain_update_rows_per_s": round(rows / plain_s),
        "expand_and_sync_s": round(expand_s, 3),
        "backfill_s": round(report.seconds, 2),
        "backfill_rows_per_s": round(rows / report.seconds),
        "backfill_vs_plain": round(plain_s / report.seconds, 2),
        "validate_s": round(validate_s, 2),
        "validation_passed": validation.passed,
        "contract_s": round(contract_s, 3),
        # a DDL statement that met the lock timeout: the writer may have queued behind it until then
        "lock_timeouts": {"expand": expanded.lock_timeouts, "contract": contracted.lock_timeouts},
        "writer_idle": idle,
        "writer_during_plain_update": plain,
        "writer_during_expand": expanding,
        "writer_during_backfill": backfill,
        "writer_idle_after_backfill": after_backfill,
        "writer_during_contract": contracting,
        "p99_vs_idle": {
            phase: round(m["p99_ms"] / idle["p99_ms"], 2)
            for phase, m in (
                ("plain_update", plain),
                ("expand", expanding),
                ("backfill", backfill),
                ("idle_after_backfill", after_backfill),
                ("contract", contracting),
            )
        },
        "longest_wait_ms": round(max(m["max_ms"] for m in (expanding, backfill, contracting)), 1),
        "lock_timeout_ms": spec.lock.timeout_ms,
    }


def analyze(engine: sa.Engine, kind: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(ANALYZE[kind]))


if __name__ == "__main__":
    main()
