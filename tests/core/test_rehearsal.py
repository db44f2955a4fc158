"""The rehearsal: every problem a run would meet after rows are copied, found before anything is
written, each naming its spec field. Each case here passed ``check`` before the rehearsal (the
mapping resolves), and the target is left as it was (rows and count) whether the rehearsal passes
or fails."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.demo import create_orders
from shiftover.errors import RehearsalError, SpecError
from shiftover.mapping import TableMapping
from shiftover.preflight import resolve_mapping, will_create_target
from shiftover.rehearsal import RehearsalReport, rehearse
from shiftover.spec import MigrationSpec, parse_spec

PAIRS = [("postgres", "postgres"), ("postgres", "mariadb"), ("mariadb", "postgres"), ("sqlite", "sqlite")]


@dataclass
class Pair:
    src: str
    dst: str
    src_kind: str
    dst_kind: str

    def table(self, side: str, *columns: sa.Column[Any], rows: list[dict[str, Any]] | None = None) -> None:
        """Create table ``t`` on ``side`` ("src" or "dst") and fill it."""
        engine = get_engine(getattr(self, side))
        table = sa.Table("t", sa.MetaData(), *columns)
        table.create(engine)
        if rows:
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)

    def spec(self, **over: Any) -> MigrationSpec:
        data: dict[str, Any] = {
            "name": "m",
            "source": {"url": self.src, "table": "t"},
            "target": {"url": self.dst, "table": "t"},
            "key": ["id"],
        }
        data.update(over)
        return parse_spec(data)

    def snapshot(self) -> tuple[int, list[str]] | None:
        """The target's rows (None when it does not exist): what a rehearsal must leave as it found it."""
        engine = get_engine(self.dst)
        if not sa.inspect(engine).has_table("t"):
            return None
        with engine.connect() as conn:
            rows = sorted(repr(tuple(r)) for r in conn.execute(sa.text("SELECT * FROM t")))
        return len(rows), rows

    def rehearse(
        self, spec: MigrationSpec, mapping: TableMapping | None = None, *, restarted: bool = False
    ) -> RehearsalReport:
        """``check``'s two steps: the mapping resolves (as before the rehearsal), then the rehearsal,
        which must leave the target untouched."""
        mapping = mapping or resolve_mapping(spec, require_target=not will_create_target(spec))
        before = self.snapshot()
        report = rehearse(spec, mapping, get_engine(self.src), get_engine(self.dst), restarted=restarted)
        assert self.snapshot() == before, "the rehearsal changed the target"
        print(f"{self.src_kind}->{self.dst_kind}: {report.rows} rows in {report.seconds:.3f} s")
        return report


@pytest.fixture(params=PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def pair(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Pair:
    src_kind, dst_kind = request.param
    return Pair(database_url(src_kind), database_url(dst_kind), src_kind, dst_kind)


def fields(report: RehearsalReport) -> list[str]:
    return [f.field for f in report.findings]


def problem(report: RehearsalReport, field: str) -> str:
    found = [f.problem for f in report.findings if f.field == field]
    assert found, f"no finding on {field!r}: {report.findings}"
    return "\n".join(found)


def key_col() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)


def rows(n: int, **values: Callable[[int], Any]) -> list[dict[str, Any]]:
    return [{"id": i, **{k: f(i) for k, f in values.items()}} for i in range(1, n + 1)]


# -- a clean spec --------------------------------------------------------------------------
def test_a_clean_spec_passes_and_leaves_the_target_as_it_was(pair: Pair) -> None:
    create_orders(get_engine(pair.src), "t", rows=300)
    create_orders(get_engine(pair.dst), "t", rows=0)
    report = pair.rehearse(pair.spec())
    assert report.ok, report.findings
    assert report.rows >= 200  # first and last ranges, random keys, NULLs, extremes
    assert pair.snapshot() == (0, [])


def test_a_clean_spec_rehearses_into_the_planned_table_before_it_exists(pair: Pair) -> None:
    create_orders(get_engine(pair.src), "t", rows=50)
    report = pair.rehearse(pair.spec(backfill={"create_target": True}))
    assert report.ok, report.findings
    assert any("temporary table of the planned DDL" in n for n in report.notes)
    assert pair.snapshot() is None  # still not created


def test_floats_and_json_pass_exactly(pair: Pair) -> None:
    """Columns the compare reads apart from the copy (floats as doubles, JSON as text): no false finding."""
    floats = [0.1 + 0.2, 13.809359999999998, 2.5e-10, 1e300, -7.25]
    columns = (sa.Column("x", sa.Double), sa.Column("doc", sa.JSON))
    pair.table("src", key_col(), *columns, rows=rows(5, x=lambda i: floats[i - 1], doc=lambda i: {"n": i, "s": "é"}))
    pair.table("dst", key_col(), *(c._copy() for c in columns))
    report = pair.rehearse(pair.spec())
    assert report.ok, report.findings
    assert report.rows == 5


# -- the problem classes -------------------------------------------------------------------
def test_null_keys_in_the_source(pair: Pair) -> None:
    key = sa.Column("id", sa.Integer, nullable=True, unique=True)
    pair.table("src", key, sa.Column("name", sa.String(20)), rows=[{"id": None, "name": "a"}, {"id": 1, "name": "b"}])
    pair.table("dst", key_col(), sa.Column("name", sa.String(20)))
    report = pair.rehearse(pair.spec())
    assert "1 source row(s) have NULL in key column(s) ['id']" in problem(report, "key")


def test_an_unmapped_not_null_target_column_without_default(pair: Pair) -> None:
    pair.table("src", key_col(), sa.Column("name", sa.String(20)), rows=rows(5, name=str))
    pair.table("dst", key_col(), sa.Column("name", sa.String(20)), sa.Column("extra", sa.Integer, nullable=False))
    report = pair.rehearse(pair.spec())
    assert "target column 'extra' is NOT NULL without a default" in problem(report, "columns")
    assert len(report.findings) == 1  # the rows themselves are rehearsed without it: nothing else is wrong


def test_text_into_an_integer_column(pair: Pair) -> None:
    pair.table("src", key_col(), sa.Column("qty", sa.String(20)), rows=rows(30, qty=lambda i: f"x{i}" if i == 7 else i))
    pair.table("dst", key_col(), sa.Column("qty", sa.Integer))
    report = pair.rehearse(pair.spec(columns=["id", "qty"]))
    found = problem(report, "columns.1.name")
    assert "'qty'" in found and "first key (7,)" in found
    assert "1 of" in found  # the other 29 values convert


@pytest.mark.parametrize("pair", PAIRS[:3], ids=[f"{a}-{b}" for a, b in PAIRS[:3]], indirect=True)
def test_a_too_narrow_varchar(pair: Pair) -> None:
    # SQLite does not enforce a VARCHAR's length: a long value is kept whole there, so no pair of it
    pair.table("src", key_col(), sa.Column("name", sa.String(50)), rows=rows(20, name=lambda i: "n" * (i % 9)))
    pair.table("dst", key_col(), sa.Column("name", sa.String(5)))
    report = pair.rehearse(pair.spec(columns=["id", {"name": "name", "target": "name"}]))
    found = problem(report, "columns.1.target")
    assert "column 'name'" in found and "the target refused" in found


def raise_on_seven(frame: pd.DataFrame) -> pd.DataFrame:
    if (frame["id"] == 7).any():
        raise ValueError("seven is not allowed")
    return frame


def drop_name(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["name"])


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (raise_on_seven, "raised ValueError: seven is not allowed on 1 of 20 rehearsed row(s), first on key (7,)"),
        (drop_name, "returns no column(s) ['name'] of the mapping"),
    ],
    ids=["raises", "drops-a-column"],
)
def test_a_transform_that_raises_or_drops_a_column(pair: Pair, transform: Any, expected: str) -> None:
    pair.table("src", key_col(), sa.Column("name", sa.String(20)), rows=rows(20, name=str))
    pair.table("dst", key_col(), sa.Column("name", sa.String(20)))
    spec = pair.spec()
    mapping = dataclasses.replace(resolve_mapping(spec), transform=transform)
    named = spec.model_copy(update={"transform": f"tests:{transform.__name__}"})
    report = pair.rehearse(named, mapping)
    assert expected in problem(report, "transform")


def test_a_lossy_timestamp_to_date(pair: Pair) -> None:
    at = sa.Column("at", sa.DateTime)
    pair.table("src", key_col(), at, rows=rows(10, at=lambda i: datetime(2024, 1, i, 9, 43, 24)))
    pair.table("dst", key_col(), sa.Column("at", sa.Date))
    report = pair.rehearse(pair.spec())
    found = problem(report, "columns")
    assert "column 'at' changes on the way in 10 of 10" in found and "first key (1,)" in found


def test_a_numeric_narrowed_by_the_target_scale(pair: Pair) -> None:
    pair.table(
        "src", key_col(), sa.Column("amount", sa.Numeric(12, 4)), rows=rows(10, amount=lambda i: Decimal(f"{i}.2345"))
    )
    pair.table("dst", key_col(), sa.Column("amount", sa.Numeric(12, 2)))
    report = pair.rehearse(pair.spec())
    found = problem(report, "columns")
    assert "column 'amount' changes on the way in 10 of 10" in found and "Decimal('1.2345')" in found


@pytest.mark.parametrize("pair", [("postgres", "mariadb")], ids=["postgres-mariadb"], indirect=True)
def test_an_unconstrained_numeric_into_a_created_mariadb_target(pair: Pair) -> None:
    """The issue's case: the created target became decimal(10,0) and -7.25 was copied as -7. It is now
    DECIMAL(65, 30) (MariaDB's widest); a value finer than 30 places is still found changed."""
    pair.table(
        "src",
        key_col(),
        sa.Column("amount", sa.Numeric()),
        rows=[*rows(10, amount=lambda i: Decimal(-i) - Decimal("0.25")), {"id": 11, "amount": Decimal("1e-31")}],
    )
    report = pair.rehearse(pair.spec(backfill={"create_target": True}))
    assert "Decimal('-1.25')" not in str(report.findings)
    assert "first key (11,): Decimal('1E-31') came back as Decimal('0E-30')" in problem(report, "columns")
    assert pair.snapshot() is None


def test_rows_already_in_the_target(pair: Pair) -> None:
    name = sa.Column("name", sa.String(20))
    pair.table("src", key_col(), name, rows=rows(20, name=str))
    pair.table("dst", key_col(), sa.Column("name", sa.String(20)), rows=[{"id": 3, "name": "older"}])
    failed = pair.rehearse(pair.spec())
    assert "already holds rows, 1 of the 20 sampled source keys (first (3,))" in problem(failed, "on_existing")
    assert fields(failed) == ["on_existing"]  # the row under key 3 is not compared: it is not the copy's
    overwrite = pair.rehearse(pair.spec(on_existing="overwrite"))
    assert overwrite.ok and any("repair replaces them" in n for n in overwrite.notes)
    restarted = pair.rehearse(pair.spec(), restarted=True)  # planned again after a rollback: its own copy
    assert restarted.ok and any("kept and topped up" in n for n in restarted.notes)


def test_rows_under_other_keys_in_the_target(pair: Pair) -> None:
    pair.table("src", key_col(), sa.Column("name", sa.String(20)), rows=rows(5, name=str))
    pair.table("dst", key_col(), sa.Column("name", sa.String(20)), rows=[{"id": 99, "name": "other"}])
    report = pair.rehearse(pair.spec())
    assert "already holds rows, none under the sampled source keys" in problem(report, "on_existing")


@pytest.mark.parametrize("pair", [("postgres", "mariadb")], ids=["postgres-mariadb"], indirect=True)
def test_keys_that_collide_under_the_target_collation(pair: Pair) -> None:
    """MariaDB's default collation ignores case and accents: 'abc' and 'Abc' are one key in an existing
    table of that collation, so a row would be lost. A created target's key column is binary: only
    the trailing space, which binary collations still pad, collides there."""
    keys = ["abc", "Abc", "résumé", "resume", "xyz"]
    pair.table(
        "src",
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("n", sa.Integer),
        rows=[{"code": k, "n": i} for i, k in enumerate([*keys, "abc "])],
    )
    created = pair.rehearse(pair.spec(key=["code"], backfill={"create_target": True}))
    assert "1 rehearsed row(s) were not found under their key after the write" in problem(created, "key")

    pair.table("dst", sa.Column("code", sa.String(20), primary_key=True), sa.Column("n", sa.Integer))
    existing = pair.rehearse(pair.spec(key=["code"]))
    assert "3 rehearsed row(s) were not found under their key after the write" in problem(existing, "key")


@pytest.mark.parametrize("pair", [("postgres", "postgres")], ids=["postgres-postgres"], indirect=True)
def test_a_column_the_diff_cannot_compare(pair: Pair) -> None:
    """(An interval or array is compared by PostgreSQL's own text between equal types: see
    tests/backfill/test_type_matrix.py.)"""
    from sqlalchemy.dialects import postgresql

    pair.table("src", key_col(), sa.Column("words", postgresql.TSVECTOR), rows=rows(3, words=lambda i: f"w{i}"))
    pair.table("dst", key_col(), sa.Column("words", postgresql.TSVECTOR))
    report = pair.rehearse(pair.spec(columns=["id", "words"]))
    assert "column 'words' has type TSVECTOR(), which has no normalisation rule" in problem(report, "columns.1.name")


@pytest.mark.parametrize("pair", [("mariadb", "postgres")], ids=["mariadb-postgres"], indirect=True)
def test_a_mariadb_zero_date_into_postgresql(pair: Pair) -> None:
    """A zero date reaches PostgreSQL as '0000-00-00' (through the rows path and the COPY stream a
    run uses alike), which it refuses; one finding for the column, not one per path."""
    pair.table("src", key_col(), sa.Column("due", sa.Date), rows=rows(3, due=lambda i: date(2024, 1, i)))
    with get_engine(pair.src).begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.exec_driver_sql("UPDATE t SET due = '0000-00-00' WHERE id = 2")
    pair.table("dst", key_col(), sa.Column("due", sa.Date))
    report = pair.rehearse(pair.spec())
    assert fields(report) == ["columns"]
    found = problem(report, "columns")
    assert "column 'due': the target refused 1 of 3 rehearsed row(s), first key (2,)" in found
    assert '"0000-00-00"' in found


def test_an_archive_name_past_the_identifier_limit(pair: Pair) -> None:
    pair.table("src", key_col(), rows=rows(3))
    pair.table("dst", key_col())
    report = pair.rehearse(pair.spec(archive={"suffix": "_" + "a" * 70}))
    if pair.src_kind == "sqlite":
        assert report.ok  # SQLite keeps names of any length
        return
    limit = {"postgres": "postgresql keeps 63", "mariadb": "mysql keeps 64"}[pair.src_kind]
    assert f"the archive table name 't_{'a' * 70}' is 72 long; {limit}" in problem(report, "archive.suffix")


def test_every_problem_at_once(pair: Pair) -> None:
    """Four problems in one spec: all four are reported, with their fields, by one ``RehearsalError``."""
    key = sa.Column("id", sa.Integer, nullable=True, unique=True)
    pair.table(
        "src",
        key,
        sa.Column("at", sa.DateTime),
        rows=[{"id": None, "at": None}, *rows(5, at=lambda i: datetime(2024, 1, i, 8))],
    )
    pair.table("dst", key_col(), sa.Column("at", sa.Date), rows=[{"id": 2, "at": None}])
    spec = pair.spec(archive={"suffix": "_" + "s" * 80})
    with pytest.raises(RehearsalError) as err:
        rehearse(spec, resolve_mapping(spec), get_engine(pair.src), get_engine(pair.dst)).require()
    expected = {"key", "on_existing", "columns"} | ({"archive.suffix"} if pair.src_kind != "sqlite" else set())
    assert set(fields_of(err.value)) == expected
    assert isinstance(err.value, SpecError) and "nothing was written" in str(err.value)


def fields_of(error: RehearsalError) -> list[str]:
    return [f.field for f in error.findings]


# -- cost -------------------------------------------------------------------------------------
@pytest.fixture(params=["postgres", "mariadb"])
def orders_100k(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Iterator[tuple[str, str, str]]:
    """100k orders in PostgreSQL, an empty orders table in PostgreSQL or MariaDB."""
    src, dst = database_url("postgres"), database_url(request.param)
    create_orders(get_engine(src), rows=100_000)
    create_orders(get_engine(dst), rows=0)
    yield src, dst, request.param


def test_rehearsal_time_on_a_100k_row_table(orders_100k: tuple[str, str, str]) -> None:
    src, dst, to = orders_100k
    spec = Pair(src, dst, "postgres", to).spec(
        source={"url": src, "table": "orders"}, target={"url": dst, "table": "orders"}
    )
    mapping = resolve_mapping(spec)
    started = time.monotonic()
    report = rehearse(spec, mapping, get_engine(src), get_engine(dst))
    print(f"\nrehearsal of 100k orders postgres->{to}: {report.rows} rows in {time.monotonic() - started:.2f} s")
    assert report.ok, report.findings
    assert report.rows <= 1_000
