"""Benchmark: the expectations gate's default suite (key unique, key not null, row count) in plain
SQL against the same checks through Great Expectations (the gate's former path), and a declared
GX suite, on an ``orders`` table per engine. Every ratio is against a baseline measured in the same run.

    .venv/bin/python bench/gates.py                                  # 100,000 rows on each engine
    .venv/bin/python bench/gates.py --rows 2000 --engines sqlite     # tiny (the test suite runs this)

Measured per engine (medians of ``--repeat`` runs, GX already imported): ``default_sql_s``
(``shiftover.default_checks``), ``default_gx_s`` (the same three checks through
``run_expectations``), ``declared_gx_s`` (the demo spec's three declared expectations through
GX). Once per process: ``gx_import_s``, the cost a first GX gate pays (``import great_expectations``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from validate import MY_DDL, MY_FILL, PG_DDL, PG_FILL  # bench/validate.py: the same table on the servers

from shiftover.connect import dispose_engines, get_engine
from shiftover.default_checks import run_default_checks
from shiftover.demo import create_orders
from shiftover.expectations import default_suite, run_expectations
from shiftover.mapping import reflect_table
from shiftover.spec import Expectation

KEY = ["id"]
DECLARED = [  # examples/orders.yaml's own expectations
    Expectation(
        type="expect_column_values_to_be_between", kwargs={"column": "amount", "min_value": 0, "max_value": 1_000_000}
    ),
    Expectation(
        type="expect_column_values_to_be_in_set",
        kwargs={"column": "status", "value_set": ["new", "paid", "shipped", "delivered", "cancelled"]},
    ),
    Expectation(type="expect_column_values_to_not_be_null", kwargs={"column": "note"}, severity="warning"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--engines", default="sqlite,postgres,mariadb")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="admin URL")
    p.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/mysql", help="admin URL")
    return p.parse_args(argv)


def median_seconds(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


# -- tables ---------------------------------------------------------------------------------


def build(kind: str, rows: int, args: argparse.Namespace, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A database of ``kind`` holding ``rows`` orders; returns its URL and how to drop it."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir}/gates.db"
        create_orders(get_engine(url), rows=rows)
        return url, lambda: None
    admin_url = args.pg if kind == "postgres" else args.mariadb
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    db = f"so_bench_gates_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    url = sa.make_url(admin_url).set(database=db).render_as_string(False)
    pg = kind == "postgres"
    with get_engine(url).begin() as conn:
        conn.execute(sa.text(PG_DDL if pg else MY_DDL))
        if pg:
            conn.execute(sa.text(PG_FILL), {"lo": 1, "hi": rows})
        else:
            conn.execute(sa.text(MY_FILL.format(lo=1, hi=rows)))
        conn.execute(sa.text("ANALYZE orders" if pg else "ANALYZE TABLE orders"))

    def drop() -> None:
        dispose_engines()
        force = " WITH (FORCE)" if pg else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}{force}"))

    return url, drop


# -- measures -------------------------------------------------------------------------------


def measure(kind: str, url: str, rows: int, repeat: int) -> dict[str, Any]:
    engine = get_engine(url)
    table = reflect_table(engine, "orders")
    suite = default_suite(KEY)
    sql_s, sql = median_seconds(lambda: run_default_checks(engine, table, KEY, suite, rows), repeat)
    gx_s, gx = median_seconds(
        lambda: run_expectations(engine, "orders", suite, parameters={"source_rows": rows}), repeat
    )
    declared_s, declared = median_seconds(lambda: run_expectations(engine, "orders", DECLARED), repeat)
    same = [verdict(o) for o in sql] == [verdict(o) for o in gx]
    return {
        "engine": kind,
        "rows": rows,
        "default_sql_s": round(sql_s, 4),
        "default_gx_s": round(gx_s, 4),
        "declared_gx_s": round(declared_s, 4),
        "default_gx_vs_sql": round(gx_s / sql_s, 1),
        "same_verdicts": same and all(o.success for o in sql),
        "declared_met": sum(o.success for o in declared),
    }


def verdict(outcome: Any) -> tuple[str, bool, float]:
    """What both paths must agree on (GX counts NULLs as ``0.0`` on MariaDB: compare numbers)."""
    return outcome.type, outcome.success, float(outcome.observed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    import great_expectations  # noqa: F401  (measured once: the first GX gate of a process pays it)

    figures: dict[str, Any] = {"gx_import_s": round(time.perf_counter() - start, 3), "engines": []}
    print(f"import great_expectations: {figures['gx_import_s']:.2f} s (once per process)", flush=True)
    with tempfile.TemporaryDirectory(prefix="so-bench-gates-") as tmp:
        for kind in args.engines.split(","):
            url, drop = build(kind, args.rows, args, Path(tmp))
            try:
                row = measure(kind, url, args.rows, args.repeat)
            finally:
                drop()
            figures["engines"].append(row)
            print(
                f"{kind:<9} {args.rows:,} rows: default suite in SQL {row['default_sql_s']:.3f} s, through GX "
                f"{row['default_gx_s']:.3f} s ({row['default_gx_vs_sql']}x); declared GX suite "
                f"{row['declared_gx_s']:.3f} s (+{figures['gx_import_s']:.1f} s import for a process's first); "
                f"same verdicts: {row['same_verdicts']}",
                flush=True,
            )
    dispose_engines()
    return figures


if __name__ == "__main__":
    result = main()
    flat = {"gx_import_s": result["gx_import_s"]}
    for row in result["engines"]:
        flat.update({f"{row['engine']}_{k}": v for k, v in row.items() if k not in ("engine",)})
    print(json.dumps(flat))  # the last line: every figure, for scripts
    sys.exit(0 if all(r["same_verdicts"] for r in result["engines"]) else 1)
