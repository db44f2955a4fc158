"""Pure logic: canonical text, kinds of type pairs, key ranges, report rendering (no server)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from shiftover.checks.gate import GateResult
from shiftover.checks.report import markdown_table, plain_rows, render_evidence, render_overview
from shiftover.diff.equality import values_equal
from shiftover.diff.normalize import ColumnRule, canonical_text, classify, hash60, pair_kind
from shiftover.diff.segments import KeyRange, integer_ranges, integer_span
from shiftover.errors import DiffError
from shiftover.spec import ValidationSpec
from shiftover.story import artifact_key


@pytest.mark.parametrize(
    ("kind", "a", "b", "arg"),
    [
        ("decimal", Decimal("1.5"), 1.50, "2"),
        ("decimal", Decimal("10.000"), Decimal(10), None),
        (
            "timestamp",
            datetime(2024, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 1, 1, 12, 0),
            "us",
        ),
        ("timestamp", datetime(2024, 1, 1, 12, 0, 0, 999), "2024-01-01 12:00:00", "ms"),
        ("text", "ab   ", "ab", "1"),
        ("boolean", True, 1, None),
        ("boolean", "f", 0, None),
        ("json", '{"b": [1, 2], "a": null}', {"a": None, "b": [1, 2]}, None),
        ("uuid", uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005", None),
        ("binary", b"\x00\xff", bytearray(b"\x00\xff"), None),
        ("date", date(2024, 2, 29), "2024-02-29", None),
        ("time", time(1, 2, 3, 456789), timedelta(hours=1, minutes=2, seconds=3, microseconds=456789), "us"),
    ],
)
def test_equal_values_have_equal_canonical_text(kind: str, a: object, b: object, arg: str | None) -> None:
    assert canonical_text(kind, a, arg) == canonical_text(kind, b, arg)


@pytest.mark.parametrize(
    ("kind", "a", "b", "arg"),
    [
        ("decimal", Decimal("1.51"), Decimal("1.5"), "2"),
        ("text", "ab ", "ab", "0"),  # VARCHAR keeps trailing spaces
        ("text", "cafe\u0301", "café", "0"),  # text is byte-exact: NFD is not NFC
        ("text", "", None, "0"),  # '' is not NULL
        ("timestamp", datetime(2024, 1, 1, 12, 0, 0, 1), datetime(2024, 1, 1, 12, 0), "us"),
        ("json", '{"a": 1}', '{"a": 2}', None),
    ],
)
def test_different_values_have_different_canonical_text(kind: str, a: object, b: object, arg: str | None) -> None:
    assert canonical_text(kind, a, arg) != canonical_text(kind, b, arg)


def test_floats_compare_within_the_declared_tolerance() -> None:
    rule = ColumnRule(target="ratio", kind="float")
    opts = ValidationSpec(float_tolerance=1e-6)
    assert values_equal(rule, 0.1 + 0.2, 0.3, opts)
    assert not values_equal(rule, 0.3001, 0.3, opts)
    assert not values_equal(rule, None, 0.0, opts) and values_equal(rule, None, None, opts)


def test_hash60_is_the_first_60_bits_of_md5() -> None:
    assert hash60("abc") == int("900150983cd24fb0d6963f7d28e17f72"[:15], 16)
    assert hash60("abc") < 2**60


def test_type_pairs_and_types_without_a_rule() -> None:
    assert classify("flag", mysql.TINYINT(display_width=1)) == "boolean"
    assert classify("ratio", postgresql.DOUBLE_PRECISION()) == "float"
    assert pair_kind("ref", "char", "uuid") == "uuid"
    assert pair_kind("amount", "integer", "decimal") == "decimal"
    assert pair_kind("code", "char", "text") == "text"
    with pytest.raises(DiffError, match=r"column 'words' has type TSVECTOR.*validation\.exclude"):
        classify("words", postgresql.TSVECTOR())
    with pytest.raises(DiffError, match=r"'flag' is boolean in the source and date in the target; add a transform"):
        pair_kind("flag", "boolean", "date")
    # arrays, intervals and bit strings: the engine's own text, between equal types on one engine only
    assert {classify(c, t) for c, t in [("span", postgresql.INTERVAL()), ("tags", sa.ARRAY(sa.Integer))]} == {"native"}
    assert classify("bits", mysql.BIT(8)) == classify("bits", postgresql.BIT(8)) == pair_kind("t", "native", "native")
    with pytest.raises(DiffError, match=r"column 'tags' is an array, interval or bit string.*columns\[\]\.sql"):
        pair_kind("tags", "native", "text")


def test_integer_ranges_cover_everything_with_open_ends() -> None:
    ranges = integer_ranges(1, 100, 4)
    assert ranges[0].lo is None and ranges[-1].hi is None
    assert [(r.lo, r.hi) for r in ranges] == [(None, (25,)), ((25,), (50,)), ((50,), (75,)), ((75,), None)]
    assert integer_span(KeyRange((25,), (50,)), 1, 100) == (26, 50)
    assert KeyRange.from_json(*KeyRange(("a", 1), None).to_json()) == KeyRange(("a", 1), None)


def test_reports_render_capped_plain_rows() -> None:
    rows = [{"key": i, "amount": Decimal("1.50"), "at": datetime(2024, 1, 1, tzinfo=UTC)} for i in range(120)]
    result = GateResult(
        gate="checksum",
        passed=False,
        summary="120 differing",
        rows=rows,
        markdown="details",
        metrics={"evidence_total": 5000},
    )
    shown, description = render_evidence(result)
    assert len(shown) == 50 and shown[0] == {"key": 0, "amount": "1.50", "at": "2024-01-01 00:00:00+00:00"}
    assert description == "checksum: 120 differing (showing 50 of 5000)"
    overview = render_overview([result, GateResult(gate="row_count", passed=True, summary="ok")], "validate", "m")
    assert "**blocked**" in overview and "| checksum | FAIL | yes | 120 differing |" in overview
    assert "… and 100 more" in markdown_table(plain_rows(rows, 120))
    assert artifact_key("Orders_Move", "validate", "checksum") == "orders-move-validate-checksum"
