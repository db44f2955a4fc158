"""One equality (pure logic): the shadow compare and the diff's row compare agree on every pair of
values over the normalisation matrix, and both are exact where the brief says so."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shiftover.diff.equality import values_equal
from shiftover.diff.normalize import ColumnRule
from shiftover.diff.rows import compare_images
from shiftover.dualwrite.shadow import compare_rows
from shiftover.spec import ValidationSpec

EXACT = ValidationSpec()

# -- values as the drivers hand them over, in more than one form each ----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def json_forms(draw: st.DrawFn) -> Any:
    """A JSON document as text (any spacing; JSON null as 'null'), as a parsed object, or SQL NULL."""
    value = draw(json_values)
    form = draw(st.sampled_from(["compact", "spaced", "object", "sql_null"]))
    if form == "sql_null":
        return None
    if form == "object" and isinstance(value, dict | list):
        return value  # what a transform may produce (JSON columns themselves are read as text)
    return json.dumps(value, separators=(",", ":") if form == "compact" else (", ", ": "))


floats = st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 0.1 + 0.2, 0.3])


@st.composite
def float_forms(draw: st.DrawFn) -> Any:
    """A float, its 17-digit text read back, or an integer when it is one."""
    x = draw(floats)
    form = draw(st.sampled_from(["float", "17 digits", "nextafter", "int"]))
    if form == "17 digits":
        return float(f"{x:.17g}")
    if form == "nextafter" and math.isfinite(x):
        return math.nextafter(x, math.inf)
    if form == "int" and math.isfinite(x) and x == int(x):
        return int(x)
    return x


decimals = st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False, allow_infinity=False)
decimal_forms = decimals.flatmap(
    lambda d: st.sampled_from([d, d.quantize(Decimal("0.0001")), int(d) if d == int(d) else d])
)


@st.composite
def timestamp_forms(draw: st.DrawFn) -> Any:
    """An instant, naive (taken as UTC) or in some zone (PostgreSQL timestamptz)."""
    naive = draw(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
    offset = draw(st.sampled_from([None, 0, 2, -7, 5.5]))
    if offset is None:
        return naive
    zone = timezone(timedelta(hours=offset))
    return naive.replace(tzinfo=UTC).astimezone(zone)


texts = st.sampled_from(["", "café", "cafe\u0301", "ab ", "ab", "null", "Å", "A\u030a"]) | st.text(max_size=6)
text_forms = st.one_of(
    st.none(), texts, texts.map(lambda t: unicodedata.normalize("NFD", t)), texts.map(lambda t: t.encode())
)

MATRIX: dict[str, Any] = {
    "json": json_forms(),
    "float": float_forms() | st.none(),
    "decimal": decimal_forms | st.none(),
    "timestamp": timestamp_forms() | st.none(),
    "text": text_forms,
}


@st.composite
def row_pairs(draw: st.DrawFn) -> tuple[list[ColumnRule], dict[str, Any], dict[str, Any]]:
    kinds = draw(st.lists(st.sampled_from(sorted(MATRIX)), min_size=1, max_size=4))
    rules = [
        ColumnRule(target=f"c{i}", kind=k, scale=2 if k == "decimal" else None, in_sql=k != "json")
        for i, k in enumerate(kinds)
    ]
    old = {r.target: draw(MATRIX[r.kind]) for r in rules}
    same = draw(st.booleans())  # half the time the new side holds the same values (in another form, maybe)
    new = {r.target: (old[r.target] if same else draw(MATRIX[r.kind])) for r in rules}
    return rules, old, new


@settings(max_examples=600, deadline=None)
@given(row_pairs())
def test_the_shadow_compare_and_the_diff_row_compare_agree(case: tuple[list[ColumnRule], dict, dict]) -> None:
    rules, old, new = case
    shadow = compare_rows(rules, old, new, EXACT)
    diff = compare_images((1,), old, new, rules, EXACT)
    assert (shadow is None) == (diff is None)
    if diff is not None:
        assert list(diff.columns) == shadow


@given(json_values)
def test_json_text_equals_its_parsed_value_and_json_null_is_not_sql_null(value: Any) -> None:
    rule = ColumnRule(target="doc", kind="json")
    text = json.dumps(value)
    assert values_equal(rule, text, json.dumps(value, indent=2, sort_keys=True), EXACT)
    if isinstance(value, dict | list):
        assert values_equal(rule, text, value, EXACT)
    assert not values_equal(rule, "null", None, EXACT)


@given(floats, floats)
def test_floats_are_equal_only_bit_for_bit(a: float, b: float) -> None:
    rule = ColumnRule(target="ratio", kind="float")
    assert values_equal(rule, a, b, EXACT) == (math.copysign(1, a) == math.copysign(1, b) and a == b)
    assert values_equal(rule, a, float(f"{a:.17g}"), EXACT)  # 17 significant digits read back exactly


@given(decimals)
def test_decimals_compare_by_value(d: Decimal) -> None:
    rule = ColumnRule(target="amount", kind="decimal", scale=2)
    assert values_equal(rule, d, d.quantize(Decimal("0.0001")), EXACT)
    assert not values_equal(rule, d, d + Decimal("0.01"), EXACT)


@given(timestamp_forms())
def test_an_instant_equals_itself_in_any_zone_and_naive_utc(ts: datetime) -> None:
    rule = ColumnRule(target="at", kind="timestamp")
    utc = ts.astimezone(UTC) if ts.tzinfo else ts
    assert values_equal(rule, ts, utc.replace(tzinfo=None), EXACT)
    assert not values_equal(rule, ts, utc.replace(tzinfo=None) + timedelta(microseconds=1), EXACT)


def test_the_exact_cases_named_in_the_brief() -> None:
    text, flt = ColumnRule(target="t", kind="text"), ColumnRule(target="f", kind="float")
    assert not values_equal(text, "café", "cafe\u0301", EXACT)  # no Unicode normalisation
    assert not values_equal(text, "", None, EXACT)  # '' is not NULL
    assert values_equal(text, b"caf\xc3\xa9", "café", EXACT)
    assert not values_equal(flt, -0.0, 0.0, EXACT)
    assert not values_equal(flt, 5e-324, 0.0, EXACT)  # the smallest subnormal is not zero
    assert values_equal(flt, 0.1 + 0.2, 0.30000000000000004, EXACT)
    assert not values_equal(flt, 0.1 + 0.2, 0.3, EXACT)
    assert values_equal(flt, 0.1 + 0.2, 0.3, ValidationSpec(float_tolerance=1e-9))
    assert values_equal(ColumnRule(target="d", kind="decimal"), Decimal("1.50"), Decimal("1.5"), EXACT)
