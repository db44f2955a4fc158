"""Engine pairs on the real servers: equal data diffs to zero, changed data to the exact keys."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.spec import ValidationSpec

from .matrix import EXPECTED, ROWS, apply_changes, fill, mapping

OPTIONS = ValidationSpec(segments=4, row_threshold=8, float_tolerance=1e-9)

PAIRS = [
    ("pg", "pg"),
    ("mariadb", "pg"),
    ("sqlite", "pg"),
    ("pg", "mariadb"),
    ("mariadb", "mariadb"),
    ("sqlite", "sqlite"),
    ("pg", "sqlite"),
]


@pytest.fixture
def make_url(pg_database, mariadb_database, sqlite_database) -> Callable[[str], str]:  # type: ignore[no-untyped-def]
    return {"pg": pg_database, "mariadb": mariadb_database, "sqlite": sqlite_database}.__getitem__  # type: ignore[return-value]


def _pair(make_url: Callable[[str], Callable[[], str]], src: str, tgt: str) -> tuple[sa.Engine, sa.Engine]:
    source, target = get_engine(make_url(src)()), get_engine(make_url(tgt)())
    fill(source)
    fill(target)
    return source, target


@pytest.mark.parametrize(("src", "tgt"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_equal_tables_diff_to_zero_and_changes_to_the_exact_keys(make_url, src: str, tgt: str) -> None:  # type: ignore[no-untyped-def]
    source, target = _pair(make_url, src, tgt)

    equal = diff_tables(source, target, mapping(), OPTIONS)
    assert equal.differences == [], [d.as_row() for d in equal.differences]
    assert (equal.source_rows, equal.target_rows) == (ROWS, ROWS)
    # Equal data hashes equal in the databases: no segment needed narrowing or a row compare.
    assert equal.segments_differing == 0

    apply_changes(target)
    found = diff_tables(source, target, mapping(), OPTIONS)
    assert {d.key: (d.kind, d.columns) for d in found.differences} == EXPECTED
    assert not found.truncated
    assert 0 < found.segments_differing <= found.segments


def test_composite_text_key_across_engines(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """Text + integer key: the sampled (non-arithmetic) narrowing path, PostgreSQL to MariaDB."""
    from shiftover.mapping import ColumnMap, TableMapping

    def table() -> sa.Table:
        return sa.Table(
            "events",
            sa.MetaData(),
            sa.Column("region", sa.String(20), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("payload", sa.Text),
        )

    rows = [{"region": f"r{r:02d}", "seq": s, "payload": f"p{r}-{s}"} for r in range(12) for s in range(40)]
    engines = []
    for url in (pg_database(), mariadb_database()):
        engine = get_engine(url)
        table().create(engine)
        with engine.begin() as conn:
            conn.execute(table().insert(), rows)
        engines.append(engine)
    source, target = engines
    t = table()
    with target.begin() as conn:
        conn.execute(t.update().where(t.c.region == "r03", t.c.seq == 7).values(payload="edited"))
        conn.execute(t.delete().where(t.c.region == "r10", t.c.seq == 39))
    cols = tuple(ColumnMap(c, c) for c in ("region", "seq", "payload"))
    m = TableMapping("events", "events", ("region", "seq"), cols)

    report = diff_tables(source, target, m, ValidationSpec(segments=3, row_threshold=20))

    assert {d.key: d.kind for d in report.differences} == {("r03", 7): "changed", ("r10", 39): "missing"}


def test_text_keys_ordered_differently_by_each_engine(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL orders 'B' before 'a' (C collation) or not (ICU); MariaDB ignores case: segments
    cut on the source's order still find every key exactly once and no false differences."""
    from shiftover.mapping import ColumnMap, TableMapping

    def table() -> sa.Table:
        return sa.Table(
            "codes", sa.MetaData(), sa.Column("code", sa.String(20), primary_key=True), sa.Column("n", sa.Integer)
        )

    codes = [f"{p}{i:03d}" for i in range(60) for p in ("a", "B", "_", "z", "é")]
    engines = []
    for url in (pg_database(), mariadb_database()):
        engine = get_engine(url)
        table().create(engine)
        with engine.begin() as conn:
            conn.execute(table().insert(), [{"code": c, "n": i} for i, c in enumerate(codes)])
        engines.append(engine)
    source, target = engines
    m = TableMapping("codes", "codes", ("code",), (ColumnMap("code", "code"), ColumnMap("n", "n")))
    options = ValidationSpec(segments=7, row_threshold=10)
    assert diff_tables(source, target, m, options).differences == []

    t = table()
    with target.begin() as conn:
        conn.execute(t.update().where(t.c.code == "B017").values(n=-1))
        conn.execute(t.delete().where(t.c.code == "é059"))
    report = diff_tables(source, target, m, options)
    assert [(d.key, d.kind) for d in report.differences] == [(("B017",), "changed"), (("é059",), "missing")]
