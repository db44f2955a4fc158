"""bench/validate.py and bench/sqlite_diff.py at a tiny size: they build, measure and find exactly the changed keys."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "validate.py"


def test_validate_bench_runs_tiny(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    pg_database(), mariadb_database()  # skips (or fails under CI) without the servers
    spec = importlib.util.spec_from_file_location("bench_validate", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)

    prefix = f"so_bt_{uuid.uuid4().hex[:8]}"
    sizes = ["--rows", "3000", "--composite-rows", "3000", "--float-rows", "2000"]
    rows = bench.main([*sizes, "--skip-reladiff", "--drop", "--prefix", prefix])

    orders = [r for r in rows if "table" not in r]
    assert [(r["pair"], r["case"]) for r in orders] == [
        (p, c) for p in ("pg-pg", "pg-mariadb") for c in ("a equal", "b 10 changed", "c 1% changed")
    ]
    assert [r["found"] for r in orders] == [0, 10, 30] * 2
    composite = [r for r in rows if r.get("table") == "composite"]
    assert [(r["pair"], r["case"], r["found"]) for r in composite] == [
        (p, c, n) for p in ("pg-pg", "pg-mariadb") for c, n in (("equal", 0), ("10 changed", 10), ("1% changed", 30))
    ]
    assert all(r.get("exact", True) for r in rows), rows
    figures = bench.figures(rows)
    assert figures["exact"] and figures["exact_float_false_diffs"] == 0
    assert {"pg_mariadb_equal_vs_floor", "composite_pg_mariadb_10_changed_vs_equal"} <= figures.keys()


def test_sqlite_bench_runs_tiny(tmp_path: Path) -> None:
    """bench/sqlite_diff.py: both implementations (the previous one re-created) find exactly the changed keys."""
    path = BENCH.with_name("sqlite_diff.py")
    spec = importlib.util.spec_from_file_location("bench_sqlite_diff", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    from shiftover.engines.sqlite import SQLite

    before = dict(SQLite.__dict__)
    rows = bench.main(["--rows", "2000", "--repeat", "1", "--workdir", str(tmp_path)])

    assert [(r["case"], r["found"], r["exact"]) for r in rows] == [("a equal", 0, True), ("b 10 changed", 10, True)]
    assert dict(SQLite.__dict__) == before  # the previous implementation is put back
