"""Bad input is refused before any work, with the column and the fix named."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shiftover.checks.data import checksum_gate
from shiftover.checks.gate import GateContext
from shiftover.connect import get_engine
from shiftover.control import schema
from shiftover.diff import diff_tables
from shiftover.errors import DiffError
from shiftover.mapping import ColumnMap, TableMapping, forget_reflections
from shiftover.spec import GateSpec, ValidationSpec


def _tables(urls: list[str], ddl: str, rows: str | None = None) -> list[sa.Engine]:
    engines = [get_engine(u) for u in urls]
    for e in engines:
        with e.begin() as conn:
            conn.execute(sa.text(ddl))
            if rows:
                conn.execute(sa.text(rows))
    return engines


def _mapping(*cols: str, key: tuple[str, ...] = ("id",)) -> TableMapping:
    return TableMapping("t", "t", key, tuple(ColumnMap(c, c) for c in cols))


def test_a_target_column_nobody_maps_is_refused_before_any_work(open_orders, orders_urls, control_store) -> None:  # type: ignore[no-untyped-def]
    m = open_orders()
    with get_engine(orders_urls[1]).begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders ADD COLUMN loyalty_tier int"))
    forget_reflections()

    result = checksum_gate(GateContext(m, "validate"), GateSpec(name="checksum"))

    assert not result.passed
    assert "['loyalty_tier']" in result.summary and "validation.exclude" in result.summary
    with control_store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.diff_segments)).scalar() == 0
    excluded = ValidationSpec(exclude=("loyalty_tier",))
    assert diff_tables(m.source, m.target, m.mapping, excluded).equal


def test_a_type_without_a_rule_names_the_column_and_the_fixes(pg_database) -> None:  # type: ignore[no-untyped-def]
    # (an interval or array between equal PostgreSQL types compares by its own text: see test_type_matrix)
    src, tgt = _tables([pg_database(), pg_database()], "CREATE TABLE t (id int PRIMARY KEY, words tsvector)")
    with pytest.raises(DiffError, match=r"column 'words' has type TSVECTOR.*exclude it \(validation\.exclude\)"):
        diff_tables(src, tgt, _mapping("id", "words"), ValidationSpec())
    assert diff_tables(src, tgt, _mapping("id", "words"), ValidationSpec(exclude=("words",))).equal


def test_a_key_with_nulls_or_duplicates_is_refused(pg_database) -> None:  # type: ignore[no-untyped-def]
    nulls = _tables(
        [pg_database(), pg_database()],
        "CREATE TABLE t (id int UNIQUE, v text)",
        "INSERT INTO t VALUES (1, 'a'), (NULL, 'b')",
    )
    with pytest.raises(DiffError, match=r"source table 't' has 1 row\(s\) with a NULL in key \['id'\]"):
        diff_tables(*nulls, _mapping("id", "v"), ValidationSpec())

    dups = _tables(
        [pg_database(), pg_database()],
        "CREATE TABLE t (id int NOT NULL, v text)",
        "INSERT INTO t VALUES (1, 'a'), (1, 'b')",
    )
    with pytest.raises(DiffError, match=r"duplicate key \(1,\) in \['id'\]; declare a unique key"):
        diff_tables(*dups, _mapping("id", "v"), ValidationSpec())


def test_a_python_transform_needs_its_columns_excluded(pg_database) -> None:  # type: ignore[no-untyped-def]
    src, tgt = _tables(
        [pg_database(), pg_database()], "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')"
    )
    mapping = TableMapping("t", "t", ("id",), (ColumnMap("id", "id"), ColumnMap("v", "v")), transform=lambda df: df)
    with pytest.raises(DiffError, match="Python transform"):
        diff_tables(src, tgt, mapping, ValidationSpec())
    assert diff_tables(src, tgt, mapping, ValidationSpec(exclude=("v",))).equal


def test_renamed_and_computed_columns_compare_with_their_source(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    src = get_engine(pg_database())
    tgt = get_engine(mariadb_database())
    with src.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY, cents int, name varchar(20))"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 150, 'x'), (2, 99, 'y')"))
    with tgt.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t2 (id int PRIMARY KEY, amount decimal(10,2), label varchar(20))"))
        conn.execute(sa.text("INSERT INTO t2 VALUES (1, 1.50, 'x'), (2, 0.98, 'y')"))
    mapping = TableMapping(
        "t",
        "t2",
        ("id",),
        (
            ColumnMap("id", "id"),
            ColumnMap("cents", "amount", sql="cents / 100.0"),
            ColumnMap("name", "label"),
        ),
    )
    report = diff_tables(src, tgt, mapping, ValidationSpec())
    assert [(d.key, d.kind, d.columns) for d in report.differences] == [((2,), "changed", ("amount",))]
