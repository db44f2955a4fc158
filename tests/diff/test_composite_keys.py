"""Text and composite keys are narrowed through one length-prefixed "key texts + md5" string per
side (``checksum.keyed_hashes``): keys holding the format's own characters (digits, ':', the hex
of a hash), multi-byte and astral characters, and a mixed text/integer key are found exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.diff import bisect, diff_tables
from shiftover.diff.checksum import keyed_hashes, parse_keyed_hashes
from shiftover.mapping import ColumnMap, TableMapping, forget_reflections
from shiftover.spec import ValidationSpec

MD5 = "0123456789abcdef0123456789abcdef"


def test_parse_keyed_hashes_takes_each_field_by_its_length() -> None:
    text = f"3:a:b2:12{MD5}0:1:7{MD5.upper()}"
    assert parse_keyed_hashes(text, 2) == {("a:b", "12"): MD5, ("", "7"): MD5.upper()}
    assert parse_keyed_hashes("", 2) == {}


DDL = {
    "postgresql": "CREATE TABLE t (region varchar(40) NOT NULL, n bigint NOT NULL, v text, PRIMARY KEY (region, n))",
    "mysql": "CREATE TABLE t (region varchar(40) NOT NULL, n bigint NOT NULL, v text, PRIMARY KEY (region, n)) "
    "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
}
REGIONS = ["a", "a:1", "12", "3:abc", "é", "😀x", MD5, "z" * 40, "ü:2:"]


def _rows() -> list[dict[str, object]]:
    return [{"region": r, "n": n, "v": f"{r}/{n}"} for r in REGIONS for n in range(400)]


@pytest.mark.parametrize("target_kind", ["postgresql", "mysql"])
def test_composite_text_keys_with_awkward_texts_are_found_exactly(  # type: ignore[no-untyped-def]
    target_kind, pg_database, mariadb_database, monkeypatch
) -> None:
    make: dict[str, Callable[[], str]] = {"postgresql": pg_database, "mysql": mariadb_database}
    source, target = get_engine(pg_database()), get_engine(make[target_kind]())
    table = sa.table("t", sa.column("region"), sa.column("n"), sa.column("v"))
    for engine, kind in ((source, "postgresql"), (target, target_kind)):
        with engine.begin() as conn:
            conn.execute(sa.text(DDL[kind]))
            conn.execute(sa.insert(table), _rows())
    changed = [("a:1", 7), ("3:abc", 399), ("😀x", 0), (MD5, 200), ("ü:2:", 13)]
    with target.begin() as conn:
        for region, n in changed:
            conn.execute(sa.text("UPDATE t SET v = 'x' WHERE region = :r AND n = :n"), {"r": region, "n": n})
        conn.execute(sa.text("DELETE FROM t WHERE region = '12' AND n = 5"))
        conn.execute(sa.text("INSERT INTO t VALUES ('12', 400, 'extra')"))
    forget_reflections()
    mapping = TableMapping(
        "t", "t", ("region", "n"), (ColumnMap("region", "region"), ColumnMap("n", "n"), ColumnMap("v", "v"))
    )

    parsed: list[int] = []

    def counted(side, rng):  # type: ignore[no-untyped-def]
        out = keyed_hashes(side, rng)
        parsed.append(len(out or {}))
        return out

    monkeypatch.setattr(bisect, "keyed_hashes", counted)
    report = diff_tables(source, target, mapping, ValidationSpec(segments=6, row_threshold=50))

    found = sorted((d.key, d.kind) for d in report.differences)
    expected = sorted([(k, "changed") for k in changed] + [(("12", 5), "missing"), (("12", 400), "extra")])
    assert found == expected
    assert report.segments_differing >= 1
    assert parsed and sum(parsed) > 0  # settled through the one-string path, both sides
