"""The segment screens on the real servers: the ordered digest, its fallback to the sums,
timestamps as epoch text, NOT NULL columns without a NULL marker, and row totals taken from
the segments instead of a full count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.diff import tables as tables_module
from shiftover.diff.checksum import int_key_hashes, range_checksum, range_digest
from shiftover.diff.segments import KeyRange
from shiftover.diff.tables import _check_postgres, plan_diff
from shiftover.engines import mysql as mysql_engine
from shiftover.errors import DiffError
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec

ROWS = 300
OPTIONS = ValidationSpec(segments=4, row_threshold=8)
STAMPS = [
    datetime(1969, 12, 31, 23, 59, 58, 500000),  # before 1970, with a fraction
    datetime(1900, 2, 28, 1, 2, 3, 999999),
    datetime(1970, 1, 1),
    datetime(2024, 1, 1, 0, 0, 7, 123456),
    datetime(2038, 1, 19, 3, 14, 8, 1),  # past the 32-bit UNIX_TIMESTAMP range
    datetime(9999, 12, 31, 23, 59, 59, 999999),  # the last second every engine holds
]


def events(not_null: bool) -> sa.Table:
    """``whole`` holds whole seconds (a MariaDB DATETIME(0)); ``exact`` microseconds."""
    return sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40), nullable=not not_null),
        sa.Column("whole", sa.DateTime(), nullable=not not_null),
        sa.Column("exact", sa.DateTime().with_variant(sa.dialects.mysql.DATETIME(fsp=6), "mysql", "mariadb")),
    )


def event(i: int) -> dict[str, Any]:
    stamp = STAMPS[i % len(STAMPS)] - timedelta(days=i % 3)
    return {
        "id": i,
        "name": "" if i % 7 == 0 else f"event {i}",
        "whole": stamp.replace(microsecond=0),
        "exact": None if i % 11 == 0 else stamp,
    }


def fill(url: str, *, not_null: bool) -> sa.Engine:
    engine = get_engine(url)
    table = events(not_null)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [event(i) for i in range(1, ROWS + 1)])
    return engine


MAPPING = TableMapping("events", "events", ("id",), tuple(ColumnMap(c, c) for c in ("id", "name", "whole", "exact")))
PAIRS = [("pg", "mariadb"), ("mariadb", "pg"), ("sqlite", "pg"), ("mariadb", "sqlite")]


@pytest.fixture
def make_url(pg_database, mariadb_database, sqlite_database) -> Callable[[str], str]:  # type: ignore[no-untyped-def]
    return lambda name: {"pg": pg_database, "mariadb": mariadb_database, "sqlite": sqlite_database}[name]()


@pytest.mark.parametrize(("src", "tgt"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_equal_timestamps_hash_equal_and_one_microsecond_is_found(make_url, src: str, tgt: str) -> None:  # type: ignore[no-untyped-def]
    # The source's columns are NOT NULL (no NULL marker in its row text), the target's nullable.
    source = fill(make_url(src), not_null=True) if src != "sqlite" else fill(make_url(src), not_null=False)
    target = fill(make_url(tgt), not_null=False)

    equal = diff_tables(source, target, MAPPING, OPTIONS)
    assert equal.differences == []
    assert equal.segments_differing == 0  # every segment's digest agreed in the databases
    plan = plan_diff(source, target, MAPPING, OPTIONS)
    hashes = int_key_hashes(plan.source, KeyRange(None, None))
    assert hashes is not None and len(hashes) == ROWS
    assert hashes == int_key_hashes(plan.target, KeyRange(None, None))  # the row-level hashes agree too

    t = events(False)
    with target.begin() as conn:
        conn.execute(t.update().where(t.c.id == 40).values(exact=event(40)["exact"] + timedelta(microseconds=1)))
        conn.execute(t.update().where(t.c.id == 41).values(name=None))  # '' or text -> NULL
    found = diff_tables(source, target, MAPPING, OPTIONS)
    assert {d.key: d.columns for d in found.differences} == {(40,): ("exact",), (41,): ("name",)}


def test_truncating_to_milliseconds_hides_only_what_lies_below(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    source, target = fill(pg_database(), not_null=False), fill(mariadb_database(), not_null=False)
    t = events(False)
    with target.begin() as conn:
        # rows 3 and 297 (other segments) hold 2024-01-01 00:00:07.123456
        conn.execute(t.update().where(t.c.id == 3).values(exact=datetime(2024, 1, 1, 0, 0, 7, 123999)))  # same ms
        conn.execute(t.update().where(t.c.id == 297).values(exact=datetime(2024, 1, 1, 0, 0, 7, 124000)))
    report = diff_tables(source, target, MAPPING, ValidationSpec(segments=4, timestamp_precision="ms"))
    assert [d.key for d in report.differences] == [(297,)]
    assert report.segments_differing == 1  # row 3 hashed equal in both databases


def test_a_digest_mariadb_cannot_build_falls_back_to_the_sums(mariadb_database, pg_database, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    source, target = fill(pg_database(), not_null=False), fill(mariadb_database(), not_null=False)
    monkeypatch.setattr(mysql_engine, "GROUP_CONCAT_MAX", 64)  # MariaDB cuts the text and warns
    plan = plan_diff(source, target, MAPPING, OPTIONS)
    whole = KeyRange(None, None)
    rows, digest = range_digest(plan.target, whole)
    assert (rows, digest) == (ROWS, None)
    assert range_digest(plan.source, whole)[1] is not None

    t = events(False)
    with target.begin() as conn:
        conn.execute(t.delete().where(t.c.id == 77))
    report = diff_tables(source, target, MAPPING, OPTIONS)
    assert [(d.key, d.kind) for d in report.differences] == [((77,), "missing")]
    assert report.segments_differing == report.segments  # every screen fell back to the sums
    assert range_checksum(plan.source, whole)[0] == ROWS


def test_row_totals_are_exact_when_statistics_only_size_the_segments(
    pg_database, mariadb_database, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    source, target = fill(pg_database(), not_null=False), fill(mariadb_database(), not_null=False)
    with source.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE events")
    with target.connect() as conn:
        conn.exec_driver_sql("ANALYZE TABLE events")
    t = events(False)
    for engine in (source, target):  # the statistics are stale from here on
        with engine.begin() as conn:
            conn.execute(t.insert(), [event(i) for i in range(ROWS + 1, ROWS + 51)])
    with target.begin() as conn:
        conn.execute(t.delete().where(t.c.id > ROWS + 40))

    counts: list[bool] = []
    real_bounds = tables_module.key_bounds

    def key_bounds(side: Any, count: bool = True) -> Any:
        counts.append(count)
        return real_bounds(side, count)

    monkeypatch.setattr(tables_module, "key_bounds", key_bounds)
    report = diff_tables(source, target, MAPPING, OPTIONS)
    assert counts == [False, False]  # sized by the statistics, nothing counted
    assert (report.source_rows, report.target_rows) == (ROWS + 50, ROWS + 40)
    assert len(report.differences) == 10

    stopped = diff_tables(source, target, MAPPING, ValidationSpec(segments=4, row_threshold=8, max_differences=3))
    assert stopped.truncated
    assert (stopped.source_rows, stopped.target_rows) == (ROWS + 50, ROWS + 40)


def test_old_postgresql_is_refused_before_timestamps_are_compared() -> None:
    from shiftover.diff.normalize import ColumnRule

    epoch = "extract(epoch from (at)::timestamp)::text"
    rules = [ColumnRule(target="at", kind="timestamp", source_sql="(at)::text", target_sql=epoch)]
    with pytest.raises(DiffError, match=r"target is PostgreSQL 13.*PostgreSQL 14 or newer.*validation.exclude"):
        _check_postgres({"source": 15, "target": 13}, rules)
    _check_postgres({"source": 15, "target": None}, rules)
    _check_postgres({"source": 13, "target": 13}, [ColumnRule(target="n", kind="integer")])
    native = [ColumnRule(target="at", kind="timestamp", source_sql="(at)::text", target_sql="(at)::text")]
    _check_postgres({"source": 13, "target": 13}, native)  # a same-type PostgreSQL pair needs no extract


def test_a_digest_past_postgresqls_size_limit_falls_back_to_the_sums(pg_database) -> None:  # type: ignore[no-untyped-def]
    """A row text PostgreSQL refuses to build (SQLSTATE 54000, as past its 1 GB limit): the range
    is counted by its sums instead, whose SQL does not depend on the digest's text."""
    source, target = fill(pg_database(), not_null=False), fill(pg_database(), not_null=False)
    plan = plan_diff(source, target, MAPPING, OPTIONS)
    too_long = replace(plan.source, row_text="repeat('x', 1073741824)")  # one byte past MaxAllocSize
    assert range_digest(too_long, KeyRange(None, None)) == (ROWS, None)
    wrong = replace(plan.source, row_text="no_such_column")
    with pytest.raises(sa.exc.ProgrammingError):  # any other error is not swallowed
        range_digest(wrong, KeyRange(None, None))


def test_differences_in_every_segment_are_all_found(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """The dense path: after one segment differs in most buckets, the next skip their bucket scans."""
    source, target = fill(pg_database(), not_null=False), fill(mariadb_database(), not_null=False)
    t = events(False)
    with target.begin() as conn:
        conn.execute(t.update().where(t.c.id % 3 == 0).values(name="changed"))
    report = diff_tables(source, target, MAPPING, ValidationSpec(segments=4, row_threshold=8, max_differences=1_000))
    assert [d.key for d in report.differences] == [(i,) for i in range(3, ROWS + 1, 3)]
    assert {d.columns for d in report.differences} == {("name",)}
    assert report.segments_differing == report.segments


@pytest.mark.parametrize(("src", "tgt"), [("pg", "mariadb"), ("sqlite", "sqlite")], ids=["pg-to-mariadb", "sqlite"])
def test_values_holding_the_separators_cannot_move_a_row_boundary(make_url, src: str, tgt: str) -> None:  # type: ignore[no-untyped-def]
    """Joined with "\\n", these two sides would read as one text: 1|a, 2|b, 3|c."""
    t = events(False)
    engines = []
    for url, rows in (
        (make_url(src), [{"id": 1, "name": "a\n2\x1fb"}, {"id": 3, "name": "c"}]),
        (make_url(tgt), [{"id": 1, "name": "a"}, {"id": 2, "name": "b\n3\x1fc"}]),
    ):
        engine = get_engine(url)
        t.create(engine)
        with engine.begin() as conn:
            conn.execute(t.insert(), [{**r, "whole": datetime(2024, 1, 1), "exact": None} for r in rows])
        engines.append(engine)
    mapping = TableMapping("events", "events", ("id",), tuple(ColumnMap(c, c) for c in ("id", "name")))
    options = ValidationSpec(segments=1, exclude=("whole", "exact"))

    report = diff_tables(*engines, mapping, options)
    assert {d.key: d.kind for d in report.differences} == {(1,): "changed", (2,): "extra", (3,): "missing"}
    assert report.segments_differing == 1


def test_a_mariadb_expression_keeps_its_fraction_against_a_whole_second_column(mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """The target's DATETIME(0) must not make the source expression's text drop its fraction."""
    source = fill(mariadb_database(), not_null=False)
    target = get_engine(mariadb_database())
    at = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime()),  # DATETIME(0): fractions are cut on the way in
    )
    at.create(target)
    with target.begin() as conn:
        conn.execute(at.insert(), [{"id": i, "at": event(i)["exact"]} for i in range(1, ROWS + 1)])
    mapping = TableMapping("events", "events", ("id",), (ColumnMap("id", "id"), ColumnMap("exact", "at", sql="exact")))

    report = diff_tables(source, target, mapping, ValidationSpec(segments=4, row_threshold=8))
    fractional = {(i,) for i in range(1, ROWS + 1) if (event(i)["exact"] or datetime.min).microsecond}
    assert {d.key for d in report.differences} == fractional
    assert {d.columns for d in report.differences} == {("at",)}


def test_empty_segments_are_not_narrowed(pg_database, mariadb_database) -> None:  # type: ignore[no-untyped-def]
    """Sparse keys leave most segments empty on both sides: equal, with nothing to narrow."""
    t = events(False)
    engines = []
    for url in (pg_database(), mariadb_database()):
        engine = get_engine(url)
        t.create(engine)
        with engine.begin() as conn:
            conn.execute(t.insert(), [{**event(i), "id": i * 1_000_000} for i in (1, 2, 3, 1000)])
        engines.append(engine)
    report = diff_tables(*engines, MAPPING, ValidationSpec(segments=64))
    assert report.equal and report.segments == 64
    assert report.segments_differing == 0
    assert (report.source_rows, report.target_rows) == (4, 4)


def test_text_that_is_not_utf8_is_compared_by_the_sums(pg_database) -> None:  # type: ignore[no-untyped-def]
    """An SQL_ASCII database may hold any bytes; convert_to refuses them, md5 of the text does not."""
    ascii_db = "ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
    # client_encoding: SQLAlchemy cannot read the server version from psycopg otherwise
    engines = [get_engine(pg_database(ascii_db) + "?client_encoding=utf8") for _ in range(2)]
    t = sa.Table("notes", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("body", sa.Text))
    for engine in engines:
        t.create(engine)
        with engine.begin() as conn:  # 0xE9: 'é' in Latin-1, not UTF-8
            conn.execute(
                sa.text("INSERT INTO notes VALUES (1, 'plain'), (2, convert_from('\\xe9'::bytea, 'SQL_ASCII'))")
            )
    mapping = TableMapping("notes", "notes", ("id",), (ColumnMap("id", "id"), ColumnMap("body", "body")))
    plan = plan_diff(engines[0], engines[1], mapping, OPTIONS)
    assert range_digest(plan.source, KeyRange(None, None)) == (2, None)
    assert range_checksum(plan.source, KeyRange(None, None)) == range_checksum(plan.target, KeyRange(None, None))
    assert diff_tables(engines[0], engines[1], mapping, OPTIONS).equal
