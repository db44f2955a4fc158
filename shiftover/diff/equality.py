"""One equality for every row compare: shadow reads, the diff's rows, repair re-checks, canary checksums.

Each mapped column gets a ``ColumnRule`` from the types on both sides (``column_rule``), and
``values_equal`` says whether two values, as the drivers return them, are equal under it.
Exact by default: floats bit-equal (-0.0 is not 0.0) unless ``validation.float_tolerance``
says otherwise, text byte-equal (no Unicode normalisation; CHAR's trailing spaces aside),
decimals by value at the larger declared scale, timestamps as instants (naive ones taken as
UTC), JSON by its parsed value. JSON columns are read as their text and floats as the driver's
float (``comparable``), since the usual read loses a JSON null or a double's last digits.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from shiftover.diff.normalize import NATIVE, ColumnRule, canonical_text, classify, decimal_scale, pair_kind, rule_code
from shiftover.errors import DiffError
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec

OPAQUE = "opaque"  # a type without a rule (shadow reads only): compared with Python's ==


def column_rule(col: ColumnMap, src: sa.Table, tgt: sa.Table, *, strict: bool = True) -> ColumnRule:
    """The rule one mapped column is compared by (no SQL yet); DiffError for unknown types when ``strict``."""
    tgt_type = tgt.c[col.target].type
    src_type: Any = src.c[col.source].type if col.sql is None else tgt_type
    try:
        tgt_kind = classify(col.target, tgt_type)
        src_kind = classify(col.source, src_type) if col.sql is None else None
        kind = pair_kind(col.target, src_kind, tgt_kind)
    except DiffError:
        if strict:
            raise
        return ColumnRule(target=col.target, kind=OPAQUE, in_sql=False)
    scales = [s for s in (decimal_scale(src_type), decimal_scale(tgt_type)) if s is not None]
    return ColumnRule(
        target=col.target,
        kind=kind,
        scale=max(scales) if scales else None,
        pad="char" in (src_kind, tgt_kind),
        source_nullable=col.sql is not None or bool(src.c[col.source].nullable),
        target_nullable=bool(tgt.c[col.target].nullable),
    )


def compare_rules(
    mapping: TableMapping, src: sa.Table, tgt: sa.Table, options: ValidationSpec, *, strict: bool = True
) -> list[ColumnRule]:
    """The rules of every compared column (``validation.exclude`` left out), in mapping order."""
    return [
        column_rule(c, src, tgt, strict=strict)
        for c in mapping.columns
        if c.target not in options.exclude and c.source not in options.exclude
    ]


def comparable(expr: sa.ColumnElement[Any], rule: ColumnRule, name: str) -> sa.ColumnElement[Any]:
    """``expr`` as a compare reads it (labelled ``name`` where that changes it); see ``read_apart``."""
    if rule.kind == "json":
        return sa.cast(expr, sa.Text).label(name)
    if rule.kind == "float":
        return sa.type_coerce(expr, sa.Double()).label(name)
    if rule.kind == NATIVE:  # the engine's own text: psycopg reads '1 mon' and '30 days' as one timedelta
        return sa.func.concat(expr, sa.literal_column("''")).label(name)
    return expr


def read_apart(rule: ColumnRule) -> bool:
    """Whether the application's own read of a column loses what the compare needs: psycopg and
    SQLAlchemy's JSON type hand JSON null over as None, like SQL NULL; SQLAlchemy turns a
    reflected MariaDB DOUBLE into a Decimal of ten places."""
    return rule.kind in ("json", "float", NATIVE)


def compare_select(
    table: sa.Table, mapping: TableMapping, rules: Sequence[ColumnRule], *, is_source: bool
) -> sa.Select[Any]:
    """Every mapped column (target names) read as the compare needs it: JSON as text, unless a
    transform takes the source's values as the copy hands them over."""
    by_target = {r.target: r for r in rules}
    cols = []
    for c in mapping.columns:
        expr = c.select_expr(table) if is_source else table.c[c.target]
        rule = by_target.get(c.target)
        cols.append(expr if rule is None or (is_source and mapping.transform) else comparable(expr, rule, c.target))
    return sa.select(*cols)


def values_equal(rule: ColumnRule, a: Any, b: Any, options: ValidationSpec) -> bool:
    """Whether two values of one column are equal: the one rule every compare uses."""
    if a is None or b is None:
        return a is None and b is None
    if rule.kind == "float":
        tol = options.float_tolerance or 0.0
        return abs(float(a) - float(b)) <= tol if tol else _bits(a) == _bits(b)
    if rule.kind == "json":
        return _json_value(a) == _json_value(b)
    if rule.kind == OPAQUE:
        return bool(_plain(a) == _plain(b))
    arg = rule_code(rule, options).split(":", 1)[1] or None
    return canonical_text(rule.kind, a, arg) == canonical_text(rule.kind, b, arg)


def differing_columns(
    rules: Sequence[ColumnRule], a: Mapping[str, Any], b: Mapping[str, Any], options: ValidationSpec
) -> list[str]:
    """The target columns whose values differ between two row images (target column names)."""
    return [r.target for r in rules if not values_equal(r, a.get(r.target), b.get(r.target), options)]


def _bits(value: Any) -> bytes:
    return struct.pack("<d", float(value))


def _json_value(value: Any) -> Any:
    """A JSON value as compared: parsed when text (bad JSON stays the text itself), numbers by
    their exact value (PostgreSQL's jsonb stores -12.5e3 as -12500: the same JSON number), object
    keys unordered, strings byte for byte."""
    if isinstance(value, str | bytes | bytearray):
        try:
            value = json.loads(value, parse_float=Decimal, parse_int=Decimal)
        except ValueError:
            return ("not json", value if isinstance(value, str) else bytes(value))
    return _json_canonical(value)


def _json_canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
        return ("number", number.normalize() if number.is_finite() else str(number))
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(k), _json_canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(_json_canonical(v) for v in value))
    return ("other", str(value))


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else value
