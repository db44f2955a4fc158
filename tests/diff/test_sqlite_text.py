"""SQLite's canonical text in SQL (``engines/sqlite.py``): for every value it is the Python
twin's text (``normalize.canonical_text``) bit for bit, or it hands the value to the twin; the
range digest built by ``group_concat`` is the Python aggregate's; and a diff over those paths
still finds a 1-ulp float change, a trailing space, a microsecond and a cent."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.diff.normalize import ROW_SEP, SEP, register_sqlite_functions
from shiftover.diff.tables import plan_diff
from shiftover.engines.sqlite import decimal_sql, timestamp_sql
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec

ODD_REALS = [
    0.0,
    -0.0,
    0.1 + 0.2,
    0.3,
    5e-324,
    2.2250738585072014e-308,
    1.005,  # 1.00499999999999989...: its repr rounds half up, the double's exact value down
    0.125,
    -0.125,
    2.675,
    123456789012.34,
    1234567890123.4,
    9999999999999.99,
    99999999999999.99,
    1e15,
    2.0**60,
    -(2.0**53) - 2,
    1.7976931348623157e308,
    float("inf"),
    float("-inf"),
    -1.5,
    -0.05,
    -0.001,
    100.0,
    0.30000000000000004,
]
ODD_OTHERS: list[Any] = [0, -1, 2**63 - 1, -(2**63), 10**18, "12.5", "abc", "1e3", "-0", b"\x01"]
STAMP_TEXTS = [
    "2024-01-01 00:00:07.000000",
    "1970-01-01 00:00:00.000000",
    "1969-12-31 23:59:59.999999",
    "1900-02-28 01:02:03.999999",
    "2024-02-29 23:59:59.999999",
    "2038-01-19 03:14:08.000001",
    "9999-12-31 23:59:59.999999",
    "2024-01-01T00:00:07.000000",  # another separator: the twin's job
    "2024-01-01 00:00:07",  # no fraction: what a copy writes for a whole second
    "2024-01-01 00:00:07.5",
    "2024-01-01 00:00:07.1234567",  # seven digits
    "2024-01-01 00:00:07.000000+02:00",  # an offset
    "2024-01-01",
    " 2024-01-01 00:00:07.000000",
    "2024/01/01 00:00:07.000000",
    "2024-01-01 00:00:07,000000",
    "2024-01-01 00:00:07.00000x",
    "2024-01-01 00:00:07.000000 ",
    "2024-01-01 0:00:07.0000000",
    "２０２４-01-01 00:00:07.000000",  # full-width digits
]
INVALID_STAMPS = [  # the twin refuses them; SQLite would roll them over: the SQL path must not take them
    "2023-02-29 00:00:00.000000",
    "2024-02-30 00:00:00.000000",
    "2024-13-01 00:00:00.000000",
    "2024-01-01 24:00:00.000000",
    "2024-01-01 23:60:00.000000",
    "2024-01-01 23:59:60.000000",
    "0000-01-01 00:00:00.000000",
]


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """An in-memory database with the diff's functions and a NUMERIC and a DATETIME column,
    as SQLAlchemy creates them (numeric affinity on both)."""
    c = sqlite3.connect(":memory:")
    register_sqlite_functions(c)
    c.execute("CREATE TABLE v (n INTEGER PRIMARY KEY, x NUMERIC(12, 2), t DATETIME)")
    yield c
    c.close()


def _fill(conn: sqlite3.Connection, column: str, values: list[Any]) -> None:
    conn.execute("DELETE FROM v")
    conn.executemany(f"INSERT INTO v (n, {column}) VALUES (?, ?)", list(enumerate(values)))


def _compare(conn: sqlite3.Connection, column: str, sql: str, fast: str, twin: str) -> int:
    """Every value's SQL text equals the twin's, and a value the twin refuses never takes the
    SQL path; returns how many values took it."""
    taken = 0
    for (n,) in conn.execute("SELECT n FROM v").fetchall():
        value, path = conn.execute(f"SELECT {column}, {fast} FROM v WHERE n = ?", (n,)).fetchone()
        taken += path is not None
        try:
            (expected,) = conn.execute(f"SELECT {twin} FROM v WHERE n = ?", (n,)).fetchone()
        except sqlite3.OperationalError:
            assert path is None, (value, path)
            continue
        (text,) = conn.execute(f"SELECT {sql} FROM v WHERE n = ?", (n,)).fetchone()
        assert text == expected, (value, text, expected)
    return taken


def _decimal(conn: sqlite3.Connection, values: list[Any], scale: int) -> int:
    _fill(conn, "x", values)
    twin = f"so_norm('decimal:{scale}', x)"
    return _compare(conn, "x", decimal_sql("x", scale, twin), decimal_sql("x", scale, "NULL"), twin)


def _timestamp(conn: sqlite3.Connection, values: list[Any], precision: str) -> int:
    _fill(conn, "t", values)
    twin = f"so_norm('timestamp:{precision}', t)"
    return _compare(conn, "t", timestamp_sql("t", precision, twin), timestamp_sql("t", precision, "NULL"), twin)


@pytest.mark.parametrize("scale", [0, 1, 2, 6, 9])
def test_decimal_sql_is_the_twins_text_for_odd_values(conn: sqlite3.Connection, scale: int) -> None:
    assert _decimal(conn, ODD_REALS + ODD_OTHERS, scale) > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.decimals(min_value=-(10**14), max_value=10**14, places=2, allow_nan=False, allow_infinity=False)
        | st.floats(-1e16, 1e16, allow_nan=False)
        | st.integers(-(2**63), 2**63 - 1),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([0, 2, 4]),
)
def test_decimal_sql_equals_the_twin_for_any_stored_number(
    conn: sqlite3.Connection, values: list[Any], scale: int
) -> None:
    stored = [float(v) if isinstance(v, Decimal) else v for v in values]  # SQLAlchemy binds Decimal as float
    _decimal(conn, stored, scale)


@pytest.mark.parametrize("precision", ["us", "ms", "s"])
def test_timestamp_sql_is_the_twins_text_for_odd_values(conn: sqlite3.Connection, precision: str) -> None:
    assert _timestamp(conn, STAMP_TEXTS, precision) == 6  # the 1970-on values of SQLAlchemy's and the copy's shapes


def test_timestamps_the_twin_refuses_never_take_the_sql_path(conn: sqlite3.Connection) -> None:
    for text in INVALID_STAMPS:
        _fill(conn, "t", [text])
        assert conn.execute(f"SELECT {timestamp_sql('t', 'us', 'NULL')} FROM v").fetchall() == [(None,)], text
        with pytest.raises(sqlite3.OperationalError):  # the twin's ValueError, as before
            conn.execute(f"SELECT {timestamp_sql('t', 'us', 'so_norm(1, t)')} FROM v").fetchall()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)), min_size=1, max_size=30),
    st.sampled_from(["us", "ms", "s"]),
)
def test_timestamp_sql_equals_the_twin_for_any_instant(
    conn: sqlite3.Connection, stamps: list[datetime], precision: str
) -> None:
    texts = [s.strftime("%Y-%m-%d %H:%M:%S.%f") for s in stamps]  # SQLAlchemy's SQLite storage format
    _timestamp(conn, texts, precision)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text() | st.sampled_from(["", SEP, "\n", "a\x1eb", "ÿ", "\U0001f600"]), max_size=20))
def test_group_concat_digest_is_the_python_aggregates(conn: sqlite3.Connection, texts: list[str]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS r (n INTEGER PRIMARY KEY, s TEXT)")
    conn.execute("DELETE FROM r")
    conn.executemany("INSERT INTO r VALUES (?, ?)", list(enumerate(texts)))
    sql = "SELECT so_md5(CAST(group_concat(s, X'FF') AS BLOB)) FROM (SELECT s FROM r ORDER BY n)"
    (digest,) = conn.execute(sql).fetchone()
    assert digest == (hashlib.md5(ROW_SEP.join(t.encode() for t in texts)).hexdigest() if texts else None)
    assert digest == conn.execute("SELECT so_digest(s) FROM (SELECT s FROM r ORDER BY n)").fetchone()[0]


# -- the diff over the SQL paths ------------------------------------------------------------

ROWS = 2_000


def _items(name: str = "items") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("ratio", sa.Double, nullable=False),
        sa.Column("label", sa.String(40)),
        sa.Column("at", sa.DateTime, nullable=False),
    )


def _item(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "amount": Decimal(i * 137 % 100000) / 100,
        "ratio": i / 7,
        "label": None if i % 10 == 0 else f"naïve\ncafé {i}",
        "at": datetime(2024, 5, 6, 7, 8, 9, 999999) + timedelta(seconds=i),
    }


def _make(url: str) -> sa.Engine:
    engine = get_engine(url)
    table = _items()
    table.create(engine)
    with engine.begin() as c:
        c.execute(table.insert(), [_item(i) for i in range(1, ROWS + 1)])
    return engine


def _diff(a: sa.Engine, b: sa.Engine, **options: Any) -> dict[int, tuple[str, ...]]:
    cols = tuple(ColumnMap(c.name, c.name) for c in _items().columns)
    mapping = TableMapping("items", "items", ("id",), cols)
    report = diff_tables(a, b, mapping, ValidationSpec(segments=4, row_threshold=8, **options))
    return {int(d.key[0]): tuple(d.columns) for d in report.differences}


def _change(engine: sa.Engine) -> dict[int, tuple[str, ...]]:
    t = _items()
    with engine.begin() as c:
        ratio = c.execute(sa.select(t.c.ratio).where(t.c.id == 77)).scalar_one()
        c.execute(t.update().where(t.c.id == 77).values(ratio=float.__add__(ratio, ratio * 2**-52)))
        c.execute(t.update().where(t.c.id == 555).values(label="naïve\ncafé 555 "))
        at = _item(1234)["at"] - timedelta(microseconds=1)
        c.execute(t.update().where(t.c.id == 1234).values(at=at))
        c.execute(t.update().where(t.c.id == 1999).values(amount=_item(1999)["amount"] + Decimal("0.01")))
    return {77: ("ratio",), 555: ("label",), 1234: ("at",), 1999: ("amount",)}


def test_sqlite_pair_finds_one_ulp_a_trailing_space_a_microsecond_and_a_cent(sqlite_database) -> None:  # type: ignore[no-untyped-def]
    a, b = _make(sqlite_database()), _make(sqlite_database())
    assert _diff(a, b) == {}
    expected = _change(b)
    assert _diff(a, b) == expected


@pytest.mark.parametrize("direction", ["sqlite-to-pg", "pg-to-sqlite"])
def test_sqlite_and_postgres_agree_through_the_sql_paths(sqlite_database, pg_database, direction: str) -> None:  # type: ignore[no-untyped-def]
    lite, pg = _make(sqlite_database()), _make(pg_database())
    a, b = (lite, pg) if direction == "sqlite-to-pg" else (pg, lite)
    assert _diff(a, b, float_tolerance=1e-300) == {}
    # a tolerance this small hashes every float as its own text, so 1 ulp is a difference here too
    expected = _change(b)
    assert _diff(a, b, float_tolerance=1e-300) == expected


def test_sqlite_pair_timestamp_spellings_of_one_instant_screen_equal(sqlite_database) -> None:  # type: ignore[no-untyped-def]
    """A whole second stored with '.000000' on one side and without a fraction on the other (as
    the backfill writes it) is one instant: the segment screens equal, only 1 us differs; a
    value the twin cannot read is refused, as before."""
    a, b = _make(sqlite_database()), _make(sqlite_database())
    with a.begin() as c:
        c.execute(sa.text("UPDATE items SET at = substr(at, 1, 19) || '.000000'"))
    with b.begin() as c:
        c.execute(sa.text("UPDATE items SET at = substr(at, 1, 19)"))
        c.execute(sa.text("UPDATE items SET at = replace(at, ' ', 'T') WHERE id = 11"))  # the twin's path
        c.execute(sa.text("UPDATE items SET at = at || '.000001' WHERE id = 12"))  # 1 us later
    cols = tuple(ColumnMap(c.name, c.name) for c in _items().columns)
    mapping = TableMapping("items", "items", ("id",), cols)
    assert "unixepoch" in plan_diff(a, b, mapping, ValidationSpec()).target.row_text
    report = diff_tables(a, b, mapping, ValidationSpec(segments=4, row_threshold=8))
    assert {int(d.key[0]): tuple(d.columns) for d in report.differences} == {12: ("at",)}
    assert report.segments_differing == 1
    with b.begin() as c:
        c.execute(sa.text("UPDATE items SET at = julianday(at) WHERE id = 13"))
    with pytest.raises(sa.exc.OperationalError):
        _diff(a, b)
