"""A MariaDB URL spelt ``mariadb+pymysql://`` (SQLAlchemy's dialect name "mariadb") diffs exactly as
``mysql+pymysql://`` does: equal data to zero, changed data to the exact keys, either side."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.diff.checksum import range_digest
from shiftover.diff.segments import KeyRange
from shiftover.diff.tables import plan_diff
from shiftover.engines import mysql as mysql_engine

from .matrix import EXPECTED, ROWS, apply_changes, fill, mapping
from .test_diff_engines import OPTIONS

CASES = [  # (source, target): "pg", or the driver a MariaDB URL is spelt with
    ("pg", "mariadb+pymysql"),
    ("mariadb+pymysql", "pg"),
    ("mariadb+pymysql", "mariadb+pymysql"),
    ("mysql+pymysql", "mariadb+pymysql"),
]


@pytest.fixture
def make_engine(pg_database, mariadb_database) -> Callable[[str], sa.Engine]:  # type: ignore[no-untyped-def]
    def make(kind: str) -> sa.Engine:
        if kind == "pg":
            return get_engine(pg_database())
        url = sa.make_url(mariadb_database()).set(drivername=kind)
        engine = get_engine(url)
        assert engine.dialect.name == kind.partition("+")[0]
        return engine

    return make


@pytest.mark.parametrize(("src", "tgt"), CASES, ids=[f"{a}-to-{b}" for a, b in CASES])
def test_either_spelling_diffs_to_the_exact_keys(make_engine, src: str, tgt: str) -> None:  # type: ignore[no-untyped-def]
    source, target = make_engine(src), make_engine(tgt)
    fill(source)
    fill(target)

    equal = diff_tables(source, target, mapping(), OPTIONS)
    assert equal.differences == [], [d.as_row() for d in equal.differences]
    assert (equal.source_rows, equal.target_rows, equal.segments_differing) == (ROWS, ROWS, 0)

    apply_changes(target)
    found = diff_tables(source, target, mapping(), OPTIONS)
    assert {d.key: (d.kind, d.columns) for d in found.differences} == EXPECTED


def test_a_cut_digest_on_a_mariadb_url_falls_back_to_the_sums(make_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The session's GROUP_CONCAT cap and the warning check apply to the "mariadb" dialect too."""
    source, target = make_engine("pg"), make_engine("mariadb+pymysql")
    fill(source)
    fill(target)
    monkeypatch.setattr(mysql_engine, "GROUP_CONCAT_MAX", 64)  # MariaDB cuts the text and warns
    plan = plan_diff(source, target, mapping(), OPTIONS)
    assert range_digest(plan.target, KeyRange(None, None)) == (ROWS, None)

    apply_changes(target)
    found = diff_tables(source, target, mapping(), OPTIONS)
    assert {d.key: (d.kind, d.columns) for d in found.differences} == EXPECTED
