"""Benchmark: Shiftover's diff against the floor (one in-database hash scan per side) and
reladiff 0.6, on two equal ``orders`` tables generated inside the databases.

Pairs: PostgreSQL/PostgreSQL and PostgreSQL/MariaDB. Cases: (a) equal tables, (b) 10
scattered changed rows, (c) 1% of rows changed. Every case checks that Shiftover found
exactly the changed keys. Prints times and ratios measured in the same run.

Two more tables (``--cases``): ``composite``, a (region, code) text key, timed equal, with 10
changed rows and with 1% changed, each against its own equal diff; ``floats``, three double
columns of every exponent written identically into PostgreSQL and MariaDB through the drivers
and compared exactly (no tolerance): its false differences must be 0.

    .venv/bin/python bench/validate.py                # 2,000,000 rows
    .venv/bin/python bench/validate.py --rows 20000 --skip-reladiff --drop
"""

from __future__ import annotations

import argparse
import json
import math
import random
import struct
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
    p.add_argument("--cases", default="orders,composite,floats", help="which tables to time")
    p.add_argument("--composite-rows", type=int, default=336_000)
    p.add_argument("--float-rows", type=int, default=200_000)
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


# -- composite text key and exact floats -------------------------------------------------------

COMPOSITE_COLUMNS = ("region", "code", "qty", "amount", "note")
COMPOSITE_DDL = {
    "postgresql": """CREATE TABLE composite (region varchar(20) NOT NULL, code varchar(40) NOT NULL,
      qty integer NOT NULL, amount numeric(12,2) NOT NULL, note text, PRIMARY KEY (region, code))""",
    "mysql": """CREATE TABLE composite (region VARCHAR(20) NOT NULL, code VARCHAR(40) NOT NULL,
      qty INT NOT NULL, amount DECIMAL(12,2) NOT NULL, note TEXT NULL, PRIMARY KEY (region, code))
      ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
}
COMPOSITE_FILL = {
    "postgresql": """INSERT INTO composite SELECT 'r' || (g % 50), 'c-' || md5(g::text), g % 1000,
      ((g::bigint * 104729) % 9999900 + 100) / 100.0, CASE WHEN g % 10 < 3 THEN NULL ELSE 'n' || g END
      FROM generate_series(1, {rows}) g""",
    "mysql": """INSERT INTO composite SELECT CONCAT('r', seq % 50), CONCAT('c-', MD5(seq)), seq % 1000,
      ((seq * 104729) % 9999900 + 100) / 100, IF(seq % 10 < 3, NULL, CONCAT('n', seq))
      FROM seq_1_to_{rows}""",
}
FLOAT_DDL = {
    "postgresql": "CREATE TABLE floats (id bigint PRIMARY KEY, a double precision, b double precision, "
    "c double precision NOT NULL)",
    "mysql": "CREATE TABLE floats (id BIGINT PRIMARY KEY, a DOUBLE, b DOUBLE, c DOUBLE NOT NULL)",
}


def _table_rows(url: str, table: str) -> int | None:
    try:
        with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return None


def build_composite(url: str, rows: int) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    kind = engine.dialect.name
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS composite"))
        conn.execute(sa.text(COMPOSITE_DDL[kind]))
        conn.execute(sa.text(COMPOSITE_FILL[kind].format(rows=rows)))
    _analyze(engine, "composite")
    engine.dispose()


def float_values(rows: int) -> list[tuple[int, float | None, float | None, float]]:
    """Doubles of every exponent (random bit patterns, subnormals, 17-digit values), money amounts
    and ratios; finite, and no -0.0 (MariaDB keeps no negative zero)."""
    rng = random.Random(20261130)

    def one() -> float:
        pick = rng.random()
        if pick < 0.4:
            while True:
                v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
                if math.isfinite(v) and not (v == 0 and math.copysign(1, v) < 0):
                    return v
        if pick < 0.7:
            return round(rng.uniform(-1e4, 1e4), 2)
        return rng.uniform(-1e6, 1e6)

    return [(i, one(), None if i % 7 == 0 else one(), one()) for i in range(1, rows + 1)]


def build_floats(url: str, values: list[tuple[int, float | None, float | None, float]]) -> None:
    """The rows written through the raw driver (no Shiftover code on the way in)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS floats"))
        conn.execute(sa.text(FLOAT_DDL[engine.dialect.name]))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for i in range(0, len(values), 10_000):
            cur.executemany("INSERT INTO floats VALUES (%s, %s, %s, %s)", values[i : i + 10_000])
        raw.commit()
    finally:
        raw.close()
    _analyze(engine, "floats")
    engine.dispose()


def _analyze(engine: sa.Engine, table: str) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    else:
        with engine.connect() as conn:
            conn.execute(sa.text(f"ANALYZE TABLE {table}"))


def composite_keys(url: str, where: str) -> set[tuple[str, str]]:
    with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
        return {(r[0], r[1]) for r in conn.execute(sa.text(f"SELECT region, code FROM composite WHERE {where}"))}


def run_composite(name: str, source: str, target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Equal, 10 changed and 1% changed on the (region, code) key; each timed against the equal diff."""
    mapping = TableMapping(
        "composite", "composite", ("region", "code"), tuple(ColumnMap(c, c) for c in COMPOSITE_COLUMNS)
    )
    options = ValidationSpec(max_differences=10 * args.composite_rows, repair=False)
    src, tgt = get_engine(source), get_engine(target)
    ten = ", ".join(f"'n{i if i % 10 >= 3 else i + 3}'" for i in scattered_ids(args.composite_rows, 10))  # noted rows
    cases = [("equal", "1 = 0"), ("10 changed", f"note IN ({ten})"), ("1% changed", "qty % 100 = 17")]
    print(f"\n== composite text key, {name}: {args.composite_rows:,} rows")
    out: list[dict[str, Any]] = []
    equal_s = 0.0
    for case, where in cases:
        expected = composite_keys(target, where)
        with sa.create_engine(target, poolclass=sa.pool.NullPool).begin() as conn:
            conn.execute(sa.text(f"UPDATE composite SET amount = amount + 1 WHERE {where}"))
        seconds, report = timed(lambda: diff_tables(src, tgt, mapping, options, workers=args.workers))
        with sa.create_engine(target, poolclass=sa.pool.NullPool).begin() as conn:
            conn.execute(sa.text(f"UPDATE composite SET amount = amount - 1 WHERE {where}"))
        found = {(str(d.key[0]), str(d.key[1])) for d in report.differences}
        equal_s = equal_s or seconds
        row = {"pair": name, "case": case, "seconds": seconds, "vs_equal": seconds / equal_s,
               "exact": found == expected, "found": len(found), "expected": len(expected)}  # fmt: skip
        print(
            f"{name:<11} {case:<11} {seconds:6.2f} s ({row['vs_equal']:.2f}x equal)  "
            f"found {len(found)}/{len(expected)} {'exact' if row['exact'] else 'NOT EXACT'}",
            flush=True,
        )
        out.append(row)
    return out


def run_floats(source: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Exact compare of equal doubles PG/MariaDB: false differences, and time against a tolerance."""
    mapping = TableMapping("floats", "floats", ("id",), tuple(ColumnMap(c, c) for c in ("id", "a", "b", "c")))
    src, tgt = get_engine(source), get_engine(target)
    exact_s, exact = timed(lambda: diff_tables(src, tgt, mapping, ValidationSpec(repair=False), workers=args.workers))
    loose = ValidationSpec(repair=False, float_tolerance=1e-9)
    loose_s, _ = timed(lambda: diff_tables(src, tgt, mapping, loose, workers=args.workers))
    print(
        f"\n== floats, pg-mariadb: {args.float_rows:,} rows x 3 doubles compared exactly: {exact_s:.2f} s "
        f"({exact_s / loose_s:.2f}x the same diff with float_tolerance 1e-9), "
        f"{len(exact.differences)} false differences, {exact.segments_differing} segments narrowed",
        flush=True,
    )
    return {"false_diffs": len(exact.differences), "seconds": exact_s, "vs_tolerance": exact_s / loose_s}


def prepare_more(args: argparse.Namespace, dbs: Databases) -> None:
    cases = args.cases.split(",")
    if "composite" in cases:
        for url in (dbs.pg_a, dbs.pg_b, dbs.maria):
            if not (args.reuse and _table_rows(url, "composite") == args.composite_rows):
                seconds, _ = timed(lambda url=url: build_composite(url, args.composite_rows))
                print(
                    f"built composite in {sa.make_url(url).database}: {args.composite_rows:,} rows in {seconds:.1f} s"
                )
    if "floats" in cases:
        values = float_values(args.float_rows)
        for url in (dbs.pg_a, dbs.maria):
            if not (args.reuse and _table_rows(url, "floats") == args.float_rows):
                seconds, _ = timed(lambda url=url: build_floats(url, values))
                print(f"built floats in {sa.make_url(url).database}: {args.float_rows:,} rows in {seconds:.1f} s")


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
    results: list[dict[str, Any]] = []
    cases = args.cases.split(",")
    prepare_more(args, dbs)
    try:
        for name in args.pairs.split(","):
            if "orders" in cases:
                results += run_pair(name, *pairs[name], args)
            if "composite" in cases:
                results += [{**r, "table": "composite"} for r in run_composite(name, *pairs[name], args)]
        if "floats" in cases:
            results.append({"table": "floats", **run_floats(dbs.pg_a, dbs.maria, args)})
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
    out: dict[str, Any] = {"exact": all(r.get("exact", True) for r in results)}
    case_names = {"a": "equal", "b": "10_changed", "c": "1pct_changed"}
    for r in results:
        if r.get("table") == "floats":
            out["exact_float_false_diffs"] = r["false_diffs"]
            out["exact_float_s"] = round(r["seconds"], 3)
            out["exact_float_vs_tolerance"] = round(r["vs_tolerance"], 3)
            continue
        pair = r["pair"].replace("-", "_")
        if r.get("table") == "composite":
            case = r["case"].replace("1%", "1pct").replace(" ", "_")
            out[f"composite_{pair}_{case}_s"] = round(r["seconds"], 3)
            if case != "equal":
                out[f"composite_{pair}_{case}_vs_equal"] = round(r["vs_equal"], 3)
            continue
        name = f"{pair}_{case_names[r['case'].split()[0]]}"
        out[f"{name}_vs_floor"] = round(r["shiftover_s"] / r["floor_s"], 3)
        if "reladiff_s" in r:
            out[f"{name}_vs_reladiff"] = round(r["shiftover_s"] / r["reladiff_s"], 3)
    return out


if __name__ == "__main__":
    print(json.dumps(figures(main())))  # the last line: every figure, for scripts
