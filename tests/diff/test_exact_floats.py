"""Floats compare exactly across engines by default (issue 11 §2): equal means bit-equal, a change
of one unit in the last place is found, ``float_tolerance: 0`` is exact too, and equal doubles
written independently into each engine (through its raw driver) never show as false differences.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.mapping import ColumnMap, TableMapping, forget_reflections
from shiftover.spec import ValidationSpec

DDL = {
    "postgresql": "CREATE TABLE t (id bigint PRIMARY KEY, a double precision, b double precision NOT NULL)",
    "mysql": "CREATE TABLE t (id bigint PRIMARY KEY, a double, b double NOT NULL)",
    "sqlite": "CREATE TABLE t (id integer PRIMARY KEY, a double precision, b double precision NOT NULL)",
}
EDGES = [
    0.1 + 0.2, 0.3, 13.809359999999998, 2.5e-10, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1e-300, 1e15, 1e16, 123456789012345.67, 1234567890123456.7, 9007199254740993.0, 1e-5, 1e-4, 3.0, -7.0,
    0.0, 1e21, 100.0, 2**-1074 * 3,
]  # fmt: skip


def doubles(n: int, seed: int) -> list[float]:
    """Edge values, then random bit patterns (every exponent) and everyday values (money, ratios)."""
    rng = random.Random(seed)
    out = list(EDGES)
    while len(out) < n:
        pick = rng.random()
        if pick < 0.4:
            v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if v != v or v in (float("inf"), float("-inf")):
                continue
        elif pick < 0.7:
            v = round(rng.uniform(-1e4, 1e4), 2)
        else:
            v = rng.uniform(-1e6, 1e6)
        out.append(v)
    return out


def load(url: str, engine_kind: str, rows: list[tuple[int, float, float]]) -> sa.Engine:
    """Rows written through the engine's raw driver (not Shiftover's writers)."""
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(DDL[engine_kind]))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        mark = "?" if engine_kind == "sqlite" else "%s"
        cur.executemany(f"INSERT INTO t VALUES ({mark}, {mark}, {mark})", rows)
        raw.commit()
    finally:
        raw.close()
    return engine


MAPPING = TableMapping("t", "t", ("id",), (ColumnMap("id", "id"), ColumnMap("a", "a"), ColumnMap("b", "b")))
PAIRS = [("postgresql", "mysql"), ("mysql", "postgresql"), ("sqlite", "postgresql"), ("postgresql", "sqlite"),
         ("sqlite", "mysql")]  # fmt: skip


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_floats_compare_bit_for_bit_across_engines(  # type: ignore[no-untyped-def]
    source_kind, target_kind, pg_database, mariadb_database, sqlite_database
) -> None:
    make: dict[str, Callable[[], str]] = {
        "postgresql": pg_database,
        "mysql": mariadb_database,
        "sqlite": sqlite_database,
    }
    values = doubles(3000, seed=11)
    rows = [(i, v, values[-1 - i]) for i, v in enumerate(values)]
    changed = {  # key -> the target's value: one ulp, below 1e-9, a subnormal step, a sign
        1: 0.30000000000000004,  # source 0.3 (row 1 holds EDGES[1])
        5: 1e-323,  # source 5e-324
        7: 1.7976931348623155e308,
        20: 2**-1074 * 2,
    }
    target_rows = [(i, changed.get(i, a), b) for i, a, b in rows]
    assert all(target_rows[k][1] != rows[k][1] for k in changed)
    source = load(make[source_kind](), source_kind, rows)
    target = load(make[target_kind](), target_kind, target_rows)
    forget_reflections()

    for options in (ValidationSpec(segments=8), ValidationSpec(segments=8, float_tolerance=0)):
        report = diff_tables(source, target, MAPPING, options)
        assert sorted((d.key, d.kind) for d in report.differences) == [((k,), "changed") for k in sorted(changed)]
        assert report.source_rows == report.target_rows == len(rows)

    # a tolerance, where asked for, still forgives what it covers (and only that)
    loose = diff_tables(source, target, MAPPING, ValidationSpec(segments=8, float_tolerance=1e-9))
    assert sorted(d.key for d in loose.differences) == [(7,)]  # 2e292 apart; the others are within 1e-9


def test_equal_floats_in_sql_texts_mostly_agree(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """The in-database texts of equal everyday doubles agree, so their segments are not narrowed:
    only the magnitudes the engines spell differently (below 1e-4, [1e15, 1e16)) fall to the row
    compare. 2,000 money amounts and ratios in 8 segments: no segment differs."""
    rng = random.Random(5)
    values = [round(rng.uniform(-1e4, 1e4), 2) if i % 2 else rng.uniform(-1e6, 1e6) for i in range(2000)]
    rows = [(i, v, float(i)) for i, v in enumerate(values)]
    source = load(pg_database(), "postgresql", rows)
    target = load(mariadb_database(), "mysql", rows)
    forget_reflections()
    report = diff_tables(source, target, MAPPING, ValidationSpec(segments=8))
    assert report.equal and report.segments_differing == 0
