"""Probe (issue 13): MariaDB's ``MODIFY ... NOT NULL, ALGORITHM=INPLACE, LOCK=NONE`` under a constant
single-row writer. Not a test: it records each attempt's duration and error, the ALTER session's
stages, what the others were doing while it waited on a metadata lock, InnoDB lock waits
(processlist, innodb_trx, innodb_lock_waits), and the writer's worst wait.

    .venv/bin/python bench/probe_mariadb_not_null.py --rows 300000 --wait 0.5 --index --trace
    .venv/bin/python bench/probe_mariadb_not_null.py --rows 300000 --wait 0.5 --index --shiftover

The first runs the bare ``ALTER ... WAIT <--wait>`` (``WAIT 0.5`` is NOWAIT on 10.11: the ALTER is
never seen waiting); the second runs the step as the constrain stage does, ``lock.timeout_ms`` =
--wait. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pymysql

HOST = {"host": "127.0.0.1", "port": 3306, "user": "root"}


def connect(db: str | None = None, autocommit: bool = True) -> pymysql.connections.Connection:
    return pymysql.connect(**HOST, database=db, autocommit=autocommit)


class Writer(threading.Thread):
    def __init__(self, db: str, rows: int, column: str, pause: float) -> None:
        super().__init__(daemon=True)
        self.db, self.rows, self.column, self.pause = db, rows, column, pause
        self.stop = threading.Event()
        self.lat: list[tuple[float, float]] = []  # (start, seconds)
        self.errors: list[str] = []

    def run(self) -> None:
        conn = connect(self.db)
        cur = conn.cursor()
        rnd = random.Random(1)
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                cur.execute(
                    f"UPDATE orders SET {self.column} = %s WHERE id = %s",
                    ("w" + str(rnd.random())[:8], rnd.randint(1, self.rows)),
                )
            except pymysql.MySQLError as e:
                self.errors.append(str(e)[:100])
            self.lat.append((t0, time.monotonic() - t0))
            if self.pause:
                time.sleep(self.pause)
        conn.close()


class Monitor(threading.Thread):
    """Polls the processlist every 20 ms; keeps what the ALTER's session and the others were doing."""

    def __init__(self, db: str) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.samples: list[tuple[float, list[tuple[Any, ...]]]] = []

    def run(self) -> None:
        conn = connect()
        cur = conn.cursor()
        while not self.stop.is_set():
            cur.execute(
                "SELECT p.id, p.command, p.time_ms, p.state, left(coalesce(p.info,''), 60), p.stage, p.progress, "
                "t.trx_started, t.trx_state FROM information_schema.processlist p "
                "LEFT JOIN information_schema.innodb_trx t ON t.trx_mysql_thread_id = p.id "
                "WHERE (p.db = %s OR p.user like 'system%%') AND p.id <> connection_id()",
                (self.db,),
            )
            rows = list(cur.fetchall())
            cur.execute(
                "SELECT r.trx_mysql_thread_id, 'LOCKWAIT', 0, concat(rl.lock_mode, ' ', rl.lock_type, ' ', "
                "rl.lock_table, ' ', coalesce(rl.lock_index, '')), concat('blocker thread ', "
                "b.trx_mysql_thread_id, ' ', coalesce(b.trx_query, '')), '', 0, b.trx_started, b.trx_state "
                "FROM information_schema.innodb_lock_waits w "
                "JOIN information_schema.innodb_trx r ON r.trx_id = w.requesting_trx_id "
                "JOIN information_schema.innodb_trx b ON b.trx_id = w.blocking_trx_id "
                "JOIN information_schema.innodb_locks rl ON rl.lock_id = w.requested_lock_id"
            )
            rows += list(cur.fetchall())
            self.samples.append((time.monotonic(), rows))
            time.sleep(0.02)
        conn.close()


def through_shiftover(db: str, args: argparse.Namespace) -> dict[str, Any]:
    """The step as the constrain stage runs it (``enforce_constraints``), lock.timeout_ms = --wait."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sqlalchemy as sa

    from shiftover.schema.columns import Target
    from shiftover.schema.constraints import enforce_constraints
    from shiftover.schema.errors import LockTimeoutError
    from shiftover.schema.spec import parse_expand_contract

    url = f"mysql+pymysql://root@127.0.0.1:3306/{db}"
    spec = parse_expand_contract(
        {
            "kind": "expand_contract",
            "name": "probe",
            "database": {"url": url, "table": "orders"},
            "key": ["id"],
            "operations": [{"op": "set_not_null", "column": "amount"}],
            "lock": {
                "timeout_ms": int(args.wait * 1000),
                "attempts": args.attempts,
                "backoff_ms": int(args.backoff * 1000),
            },
        }
    )
    engine = sa.create_engine(url)
    try:
        report = enforce_constraints(Target.of(engine, spec), spec)
        return {"succeeded": True, "attempts": report.attempts, "lock_timeouts": report.lock_timeouts}
    except LockTimeoutError as error:
        return {"succeeded": False, "error": str(error)[:200]}
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--wait", type=float, default=0.5, help="ALTER ... WAIT n (seconds)")
    ap.add_argument("--index", action="store_true", help="index the column the writer updates")
    ap.add_argument("--attempts", type=int, default=12)
    ap.add_argument("--pause", type=float, default=0.002, help="writer's sleep between updates")
    ap.add_argument("--writer-column", default="note")
    ap.add_argument("--extra", default="", help="extra ALTER clause, e.g. 'FORCE'")
    ap.add_argument("--no-writer", action="store_true")
    ap.add_argument("--backoff", type=float, default=0.2)
    ap.add_argument("--shiftover", action="store_true", help="run the step through enforce_constraints")
    ap.add_argument("--trace", action="store_true", help="print the processlist while the ALTER waits")
    args = ap.parse_args()

    db = f"so_probe_{uuid.uuid4().hex[:8]}"
    admin = connect()
    a = admin.cursor()
    a.execute(f"CREATE DATABASE {db}")
    out: dict[str, Any] = {"rows": args.rows, "wait": args.wait, "index": args.index}
    try:
        a.execute(f"USE {db}")
        a.execute("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2) NULL, note varchar(40))")
        a.execute(
            f"INSERT INTO orders SELECT seq, (seq * 37 % 100000) / 100.0, concat('n', seq) FROM seq_1_to_{args.rows}"
        )
        if args.index:
            a.execute("ALTER TABLE orders ADD INDEX ix_orders_note (note)")
        writer = Writer(db, args.rows, args.writer_column, args.pause)
        monitor = Monitor(db)
        if not args.no_writer:
            writer.start()
        monitor.start()
        time.sleep(0.5)
        ddl = connect(db)
        d = ddl.cursor()
        d.execute("SELECT connection_id()")
        ddl_id = d.fetchone()[0]
        attempts: list[dict[str, Any]] = []
        t_all = time.monotonic()
        if args.shiftover:
            out |= through_shiftover(db, args)
            args.attempts = 0
        for n in range(1, args.attempts + 1):
            t0 = time.monotonic()
            error = None
            try:
                d.execute(
                    f"ALTER TABLE orders WAIT {args.wait:g} MODIFY amount decimal(12,2) NOT NULL"
                    f"{', ' + args.extra if args.extra else ''}, ALGORITHM=INPLACE, LOCK=NONE"
                )
            except pymysql.MySQLError as e:
                error = str(e)[:120]
            t1 = time.monotonic()
            # the ALTER session's stages during the attempt, and who else was busy while it waited on MDL
            stages: list[tuple[float, str, str]] = []
            others: Counter[str] = Counter()
            for ts, rows in monitor.samples:
                if not t0 <= ts <= t1:
                    continue
                for r in rows:
                    if r[0] == ddl_id:
                        key = (str(r[3]), str(r[5]))
                        if not stages or stages[-1][1:] != key:
                            stages.append((round(ts - t0, 3), *key))
                for r in rows:
                    if r[1] == "LOCKWAIT":
                        others[f"innodb wait by {'ALTER' if r[0] == ddl_id else r[0]}: {r[3]} <- {r[4][:60]}"] += 1
                alter_state = next((str(r[3]) for r in rows if r[0] == ddl_id), "")
                if "metadata lock" in alter_state:
                    for r in rows:
                        if r[0] != ddl_id:
                            others[f"{r[1]}|{r[3]}|{r[4][:40]}|trx={r[8]}"] += 1
            attempts.append(
                {
                    "n": n,
                    "seconds": round(t1 - t0, 3),
                    "error": error,
                    "stages": stages,
                    "others_while_alter_waits_mdl": others.most_common(6),
                }
            )
            print(json.dumps(attempts[-1]) if args.trace else f"attempt {n}: {t1 - t0:.3f}s {error}", flush=True)
            if error is None:
                break
            time.sleep(args.backoff)
        total = time.monotonic() - t_all
        writer.stop.set()
        monitor.stop.set()
        if not args.no_writer:
            writer.join()
        monitor.join()
        lat = [s for t, s in writer.lat if t >= t_all]
        if not args.shiftover:
            out |= {"attempts": len(attempts), "succeeded": attempts[-1]["error"] is None}
        out |= {
            "total_seconds": round(total, 2),
            "attempt_seconds": [x["seconds"] for x in attempts],
            "writes": len(lat),
            "writer_max_ms": round(max(lat, default=0) * 1000, 1),
            "writer_errors": writer.errors[:3],
        }
        ddl.close()
    finally:
        a.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
