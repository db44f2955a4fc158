"""Benchmark: Shiftover's diff against the floor (one in-database hash scan per side) and
reladiff 0.6, on two equal ``orders`` tables generated inside the databases.

Pairs: PostgreSQL/PostgreSQL and PostgreSQL/MariaDB. Cases: (a) equal tables, (b) 10
scattered changed rows, (c) 1% of rows changed. Every case checks that Shiftover found
exactly the changed keys. Prints times and ratios measured in the same run.

    .venv/bin/python bench/validate.py                # 2,000,000 rows
    .venv/bin/python bench/validate.py --rows 20000 --skip-reladiff --drop
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shiftover.connect import dispose_engines, get_engine
from shiftover.diff import diff_tables
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec

COLUMNS = ("id", "customer_id", "amount", "status", "note", "created_at", "updated_at")
PG_DDL = """CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2) NOT NULL,
  status varchar(20) NOT NULL, note text, created_at timestamp NOT NULL, updated_at timestamp NOT NULL)"""
PG_FILL = """INSERT INTO orders SELECT g, (g * 7919) % 50000 + 1, ((g * 104729) % 9999900 + 100) / 100.0,
  (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + g % 5],
  CASE WHEN g % 10 < 3 THEN NULL ELSE 'note ' || (g * 31) % 1000000 END,
  timestamp '2024-01-01' + g * interval '7 seconds',
  timestamp '2024-01-01' + g * interval '7 seconds' + (g % 600) * interval '1 minute'
  FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g"""
MY_DDL = """CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, amount DECIMAL(12,2) NOT NULL,
  status VARCHAR(20) NOT NULL, note TEXT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)
  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
MY_FILL = """INSERT INTO orders SELECT seq, (seq * 7919) % 50000 + 1, ((seq * 104729) % 9999900 + 100) / 100,
  ELT(1 + seq % 5, 'new','paid','shipped','delivered','cancelled'),
  IF(seq % 10 < 3, NULL, CONCAT('note ', (seq * 31) % 1000000)),
  TIMESTAMP('2024-01-01') + INTERVAL seq * 7 SECOND,
  TIMESTAMP('2024-01-01') + INTERVAL seq * 7 SECOND + INTERVAL seq % 600 MINUTE
  FROM seq_{lo}_to_{hi}"""
FLOOR_SQL = {
    "postgresql": "SELECT count(*), sum(('x' || substr(md5(o::text), 1, 15))::bit(60)::bigint) FROM orders o",
    "mysql": "SELECT count(*), SUM(CONV(LEFT(MD5(CONCAT_WS('|', id, customer_id, amount, status, note, created_at, "
    "updated_at)), 15), 16, 10)) FROM orders",
}


@dataclass
class Databases:
    pg_a: str
    pg_b: str
    maria: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="admin URL")
    p.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/mysql", help="admin URL")
    p.add_argument("--prefix", default="so_bench", help="names of the benchmark databases")
    p.add_argument("--pairs", default="pg-pg,pg-mariadb")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--skip-reladiff", action="store_true")
    p.add_argument("--reladiff-many", action="store_true", help="also run reladiff on case (c)")
    p.add_argument("--reuse", action="store_true", help="keep tables of the right size from an earlier run")
    p.add_argument("--drop", action="store_true", help="drop the databases at the end")
    return p.parse_args(argv)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# -- setup ----------------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> Databases:
    pg_admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    my_admin = sa.create_engine(args.mariadb, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    dbs = Databases(
        _db_url(args.pg, f"{args.prefix}_a"),
        _db_url(args.pg, f"{args.prefix}_b"),
        _db_url(args.mariadb, f"{args.prefix}_m"),
    )
    for url, admin in ((dbs.pg_a, pg_admin), (dbs.pg_b, pg_admin), (dbs.maria, my_admin)):
        if args.reuse and _has_rows(url, args.rows):
            continue
        seconds = _build(url, admin, args.rows)
        print(f"built {sa.make_url(url).database}: {args.rows:,} rows in {seconds:.1f} s")
    return dbs


def _db_url(admin_url: str, database: str) -> str:
    return sa.make_url(admin_url).set(database=database).render_as_string(False)


def _has_rows(url: str, rows: int) -> bool:
    try:
        with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == rows
    except sa.exc.SQLAlchemyError:
        return False


def _build(url: str, admin: sa.Engine, rows: int) -> float:
    db = sa.make_url(url).database
    start = time.perf_counter()
    _drop_database(admin, db)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(sa.text(PG_DDL if pg else MY_DDL))
    for lo in range(1, rows + 1, 500_000):
        hi = min(rows, lo + 499_999)
        with engine.begin() as conn:
            if pg:
                conn.execute(sa.text(PG_FILL), {"lo": lo, "hi": hi})
            else:
                conn.execute(sa.text(MY_FILL.format(lo=lo, hi=hi)))
    _vacuum(engine)
    engine.dispose()
    return time.perf_counter() - start


def _vacuum(engine: sa.Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE orders"))
    else:
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE TABLE orders"))


# -- changes --------------------------------------------------------------------------------


def scattered_ids(rows: int, count: int) -> list[int]:
    step = max(1, rows // count)
    return [1 + (i * step + 7 * i) % rows for i in range(count)]


def change(url: str, ids_sql: str, delta: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE orders SET amount = amount + {delta} WHERE {ids_sql}"))
    _vacuum(engine)
    engine.dispose()


# -- measurements ---------------------------------------------------------------------------


def floor(source: str, target: str) -> tuple[float, float, float]:
    """Seconds for the md5 scan of each side alone, and of both at once (what a diff overlaps)."""

    def scan(url: str) -> float:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            seconds, _ = timed(lambda: conn.execute(sa.text(FLOOR_SQL[engine.dialect.name])).one())
        engine.dispose()
        return seconds

    one, two = scan(source), scan(target)
    with ThreadPoolExecutor(2) as pool:
        both, _ = timed(lambda: list(pool.map(scan, (source, target))))
    return one, two, both


def shiftover(source: str, target: str, args: argparse.Namespace) -> tuple[float, set[int]]:
    mapping = TableMapping("orders", "orders", ("id",), tuple(ColumnMap(c, c) for c in COLUMNS))
    options = ValidationSpec(segments=args.segments, max_differences=10 * args.rows, repair=False)
    src, tgt = get_engine(source), get_engine(target)
    seconds, report = timed(lambda: diff_tables(src, tgt, mapping, options, workers=args.workers))
    return seconds, {int(d.key[0]) for d in report.differences}


def reladiff(source: str, target: str, args: argparse.Namespace) -> tuple[float, set[int]]:
    import logging

    from reladiff import connect_to_table
    from reladiff import diff_tables as rd_diff

    def uri(url: str) -> str:
        u = sa.make_url(url)
        return u.set(drivername=u.get_backend_name()).render_as_string(False)

    logging.getLogger().setLevel(logging.ERROR)  # reladiff logs a warning per text column

    def run() -> set[int]:
        a = connect_to_table(uri(source), "orders", "id", thread_count=args.workers)
        b = connect_to_table(uri(target), "orders", "id", thread_count=args.workers)
        found = {
            int(row[0])
            for _, row in rd_diff(a, b, extra_columns=COLUMNS[1:], threaded=True, max_threadpool_size=args.workers)
        }
        a.database.close()
        b.database.close()
        return found

    return timed(run)


# -- the run --------------------------------------------------------------------------------


def run_pair(name: str, source: str, target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    one, two, both = floor(source, target)
    print(f"\n== {name}: floor (md5 scan) source {one:.2f} s, target {two:.2f} s, both at once {both:.2f} s")
    ten = scattered_ids(args.rows, 10)
    cases = [
        ("a equal", "1 = 0", set()),
        ("b 10 changed", f"id IN ({', '.join(map(str, ten))})", set(ten)),
        ("c 1% changed", "id % 100 = 17", {i for i in range(17, args.rows + 1, 100)}),
    ]
    out = []
    for case, where, expected in cases:
        if expected:
            change(target, where, "1")
        so_s, so_keys = shiftover(source, target, args)
        row: dict[str, Any] = {
            "pair": name,
            "case": case,
            "shiftover_s": so_s,
            "floor_s": both,
            "exact": so_keys == expected,
            "found": len(so_keys),
            "expected": len(expected),
        }
        if not args.skip_reladiff and (case != "c 1% changed" or args.reladiff_many):
            rd_s, rd_keys = reladiff(source, target, args)
            row.update(reladiff_s=rd_s, reladiff_found=len(rd_keys))
        if expected:
            change(target, where, "-1")
        out.append(row)
        _print_row(row)
    return out


def _print_row(row: dict[str, Any]) -> None:
    text = (
        f"{row['pair']:<11} {row['case']:<13} shiftover {row['shiftover_s']:6.2f} s "
        f"({row['shiftover_s'] / row['floor_s']:.2f}x floor)"
    )
    if "reladiff_s" in row:
        text += f"  reladiff {row['reladiff_s']:6.2f} s  ratio {row['shiftover_s'] / row['reladiff_s']:.2f}x"
        text += f" (reladiff found {row['reladiff_found']})"
    text += f"  found {row['found']}/{row['expected']} {'exact' if row['exact'] else 'NOT EXACT'}"
    print(text, flush=True)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    dbs = prepare(args)
    pairs = {"pg-pg": (dbs.pg_a, dbs.pg_b), "pg-mariadb": (dbs.pg_a, dbs.maria)}
    results = []
    try:
        for name in args.pairs.split(","):
            results += run_pair(name, *pairs[name], args)
    finally:
        dispose_engines()
        if args.drop:
            _drop(args, dbs)
    return results


def _drop(args: argparse.Namespace, dbs: Databases) -> None:
    for admin_url, url in ((args.pg, dbs.pg_a), (args.pg, dbs.pg_b), (args.mariadb, dbs.maria)):
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        _drop_database(admin, sa.make_url(url).database)
        admin.dispose()


def _drop_database(admin: sa.Engine, db: str | None) -> None:
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}{force}"))


def figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One dict of the run's figures: per pair and case, the time against the floor and reladiff."""
    out: dict[str, Any] = {"exact": all(r["exact"] for r in results)}
    for r in results:
        name = f"{r['pair']}_{r['case'].split()[0]}".replace("-", "_")
        out[f"{name}_vs_floor"] = round(r["shiftover_s"] / r["floor_s"], 3)
        if "reladiff_s" in r:
            out[f"{name}_vs_reladiff"] = round(r["shiftover_s"] / r["reladiff_s"], 3)
    return out


if __name__ == "__main__":
    print(json.dumps(figures(main())))  # the last line: every figure, for scripts
