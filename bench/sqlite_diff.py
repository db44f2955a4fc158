"""Benchmark: the diff of two SQLite files of the demo's ``orders`` (``create_orders``) against
two baselines measured in the same run: the floor (a plain ``SELECT *`` of both sides, fetched
into Python at once) and the previous implementation (every decimal and timestamp rendered by
the Python twin, a Python digest aggregate, 16 segments), re-created for the run by
``previous_sqlite``.

Cases: (a) equal files, (b) 10 scattered changed amounts. Every case checks that both
implementations found exactly the changed keys. Times are the best of ``--repeat`` runs.

    .venv/bin/python bench/sqlite_diff.py                 # 100,000 rows
    .venv/bin/python bench/sqlite_diff.py --rows 5000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shiftover.connect import dispose_engines, get_engine
from shiftover.demo.orders import create_orders
from shiftover.diff import diff_tables
from shiftover.diff.normalize import rule_code
from shiftover.engines import ordered_row_texts
from shiftover.engines.sqlite import SQLite
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec

COLUMNS = ("id", "customer_id", "amount", "status", "note", "created_at", "updated_at")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs per measurement")
    p.add_argument("--workdir", default=None, help="where the two files go (a temporary directory by default)")
    return p.parse_args(argv)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    seconds, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        seconds = min(seconds, time.perf_counter() - start)
    return seconds, value


@contextmanager
def previous_sqlite() -> Iterator[None]:
    """The SQLite side as it was before its SQL text paths: so_norm for every value but integers,
    plain text and blobs, so_sum(so_hash60()), the so_digest aggregate, the default segments."""

    def canonical_sql(self: SQLite, rule: Any, own: str, x: str, col_type: Any, o: ValidationSpec) -> str:
        if rule.kind == "integer" or (rule.kind == "text" and not rule.pad):
            return f"CAST({x} AS TEXT)"
        if rule.kind == "binary":
            return f"lower(hex({x}))"
        return f"so_norm('{rule_code(rule, o)}', {x})"

    def digest_query(self: SQLite, side: Any, where: Any) -> sa.Select[Any]:
        rows = ordered_row_texts(side, where)
        return sa.select(sa.func.count(), sa.func.so_digest(rows.c.t)).select_from(rows)

    def row_hash(self: SQLite, text: str, fast_hash: bool) -> tuple[str, str]:
        return f"so_hash60({text})", f"so_sum(so_hash60({text}))"

    patched = {
        "canonical_sql": canonical_sql,
        "digest_query": digest_query,
        "row_hash": row_hash,
        "native_kinds": frozenset({"integer", "text"}),
        "segment_rows": None,
    }
    saved = {name: SQLite.__dict__[name] for name in patched}
    for name, value in patched.items():
        setattr(SQLite, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(SQLite, name, value)


def floor(source: str, target: str, repeat: int) -> float:
    """Both sides' ``SELECT *`` fetched into Python at the same time (what a diff overlaps)."""

    def scan(url: str) -> int:
        with get_engine(url).connect() as conn:
            return len(conn.execute(sa.text("SELECT * FROM orders")).fetchall())

    with ThreadPoolExecutor(2) as pool:
        seconds, _ = best(lambda: list(pool.map(scan, (source, target))), repeat)
    return seconds


def diff(source: str, target: str, repeat: int) -> tuple[float, set[int]]:
    mapping = TableMapping("orders", "orders", ("id",), tuple(ColumnMap(c, c) for c in COLUMNS))
    options = ValidationSpec(max_differences=1000, repair=False)
    seconds, report = best(lambda: diff_tables(get_engine(source), get_engine(target), mapping, options), repeat)
    return seconds, {int(d.key[0]) for d in report.differences}


def change(url: str, ids: list[int], delta: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(sa.text(f"UPDATE orders SET amount = amount + {delta} WHERE id IN ({', '.join(map(str, ids))})"))


def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    source, target = f"sqlite:///{workdir / 'old.db'}", f"sqlite:///{workdir / 'new.db'}"
    start = time.perf_counter()
    create_orders(get_engine(source), rows=args.rows)
    dispose_engines()
    shutil.copy(workdir / "old.db", workdir / "new.db")
    print(f"built 2 x {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
    step = max(1, args.rows // 10)
    ten = [1 + i * step + 7 * i for i in range(10) if 1 + i * step + 7 * i <= args.rows]
    out = []
    for case, ids in (("a equal", []), ("b 10 changed", ten)):
        if ids:
            change(target, ids, "1")
        floor_s = floor(source, target, args.repeat)
        now_s, now_keys = diff(source, target, args.repeat)
        with previous_sqlite():
            before_s, before_keys = diff(source, target, args.repeat)
        if ids:
            change(target, ids, "-1")
        row = {
            "case": case,
            "shiftover_s": now_s,
            "previous_s": before_s,
            "floor_s": floor_s,
            "exact": now_keys == set(ids) and before_keys == set(ids),
            "found": len(now_keys),
            "expected": len(ids),
        }
        print(
            f"sqlite-sqlite {case:<13} shiftover {now_s:5.2f} s  previous {before_s:5.2f} s "
            f"({now_s / before_s:.2f}x)  floor {floor_s:5.2f} s ({now_s / floor_s:.2f}x floor)  "
            f"found {row['found']}/{row['expected']} {'exact' if row['exact'] else 'NOT EXACT'}",
            flush=True,
        )
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    try:
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            return run(args, Path(args.workdir))
        with tempfile.TemporaryDirectory(prefix="so_bench_sqlite_") as tmp:
            return run(args, Path(tmp))
    finally:
        dispose_engines()


def figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One dict of the run's figures: per case, the time against the previous implementation and the floor."""
    out: dict[str, Any] = {"exact": all(r["exact"] for r in results)}
    for r in results:
        name = f"sqlite_sqlite_{r['case'].split()[0]}"
        out[f"{name}_s"] = round(r["shiftover_s"], 3)
        out[f"{name}_vs_previous"] = round(r["shiftover_s"] / r["previous_s"], 3)
        out[f"{name}_vs_floor"] = round(r["shiftover_s"] / r["floor_s"], 3)
    return out


if __name__ == "__main__":
    print(json.dumps(figures(main())))  # the last line: every figure, for scripts
