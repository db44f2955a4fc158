"""Row-level comparison: for candidate keys, fetch both row images and name what differs.

Hash mismatches are only candidates: here values are compared by ``equality.values_equal``, the
rule shadow reads use too, so the diff and the shadow compare cannot disagree. Rows are read by
key without any ``since`` filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from shiftover.diff.checksum import Side, side_connection
from shiftover.diff.equality import comparable, compare_select, differing_columns, values_equal
from shiftover.diff.normalize import ColumnRule, canonical_text
from shiftover.diff.report import CHANGED, EXTRA, MISSING, Difference, Key
from shiftover.diff.segments import KeyRange
from shiftover.mapping import TableMapping
from shiftover.rowsync import key_in
from shiftover.spec import ValidationSpec

_BATCH = 1_000


def key_token(rules: Sequence[ColumnRule], key: Key) -> tuple[str | None, ...]:
    """A key's engine-independent identity (a UUID object and its text form match)."""
    if all(r.kind == "integer" for r in rules):
        return tuple(str(int(v)) for v in key)
    if all(r.kind == "text" and not r.pad for r in rules) and all(type(v) is str for v in key):
        return tuple(key)  # the canonical text of a str is itself: skip the per-value dispatch
    return tuple(
        canonical_text(r.kind, v, None if r.kind != "decimal" else r.scale) for r, v in zip(rules, key, strict=False)
    )


def compare_keys(
    source: Side,
    target: Side,
    mapping: TableMapping,
    rules: Sequence[ColumnRule],
    options: ValidationSpec,
    keys: Iterable[Key],
) -> list[Difference]:
    """Differences among ``keys`` (source or target key values), in key order of the input."""
    key_rules = rules[: len(mapping.key)]
    wanted: dict[tuple[str | None, ...], Key] = {}
    for k in keys:
        wanted.setdefault(key_token(key_rules, k), tuple(k))
    if not wanted:
        return []
    src_rows = _fetch(source, mapping, rules, list(wanted.values()), is_source=True)
    tgt_rows = _fetch(target, mapping, rules, list(wanted.values()), is_source=False)
    by_src = {key_token(key_rules, tuple(r[c] for c in mapping.target_key)): r for r in src_rows}
    by_tgt = {key_token(key_rules, tuple(r[c] for c in mapping.target_key)): r for r in tgt_rows}
    out = []
    for token, key in wanted.items():
        diff = compare_images(key, by_src.get(token), by_tgt.get(token), rules, options)
        if diff is not None:
            out.append(diff)
    return out


def compare_images(
    key: Key,
    src: dict[str, Any] | None,
    tgt: dict[str, Any] | None,
    rules: Sequence[ColumnRule],
    options: ValidationSpec,
) -> Difference | None:
    """The difference between two row images (target column names), or None when equal."""
    if src is None and tgt is None:
        return None
    if tgt is None:
        return Difference(key, MISSING)
    if src is None:
        return Difference(key, EXTRA)
    changed = differing_columns(rules, src, tgt, options)
    if not changed:
        return None
    detail = {c: [_plain(src.get(c)), _plain(tgt.get(c))] for c in changed}
    return Difference(key, CHANGED, tuple(changed), detail)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _fetch(
    side: Side, mapping: TableMapping, rules: Sequence[ColumnRule], keys: Sequence[Key], *, is_source: bool
) -> list[dict[str, Any]]:
    key_names = mapping.key if is_source else mapping.target_key
    out: list[dict[str, Any]] = []
    with side_connection(side) as conn:
        for i in range(0, len(keys), _BATCH):
            where = key_in(side.table, key_names, keys[i : i + _BATCH])
            query = compare_select(side.table, mapping, rules, is_source=is_source).where(where)
            out.extend(dict(r._mapping) for r in conn.execute(query))
    return mapping.transform_records(out) if is_source else out


def python_column_keys(
    source: Side,
    target: Side,
    mapping: TableMapping,
    rules: Sequence[ColumnRule],
    options: ValidationSpec,
    rng: KeyRange,
) -> list[Key]:
    """Keys in ``rng`` whose Python-only columns (cross-engine JSON) differ: streamed per range."""
    py_rules = [r for r in rules if not r.in_sql]
    if not py_rules:
        return []
    key_rules = rules[: len(mapping.key)]
    src = _range_values(source, mapping, key_rules, py_rules, rng, is_source=True)
    tgt = _range_values(target, mapping, key_rules, py_rules, rng, is_source=False)
    out = []
    for token in src.keys() | tgt.keys():
        a, b = src.get(token), tgt.get(token)
        if (
            a is None
            or b is None
            or not all(values_equal(r, a[1][i], b[1][i], options) for i, r in enumerate(py_rules))
        ):
            out.append((a or b)[0])  # type: ignore[index]
    return out


def _range_values(
    side: Side,
    mapping: TableMapping,
    key_rules: Sequence[ColumnRule],
    py_rules: Sequence[ColumnRule],
    rng: KeyRange,
    *,
    is_source: bool,
) -> dict[tuple[str | None, ...], tuple[Key, list[Any]]]:
    by_target = {c.target: c for c in mapping.columns}
    cols = [
        comparable(by_target[r.target].select_expr(side.table) if is_source else side.table.c[r.target], r, r.target)
        for r in py_rules
    ]
    query = sa.select(*side.key_columns, *cols).where(side.in_range(rng))
    n = len(side.key)
    out: dict[tuple[str | None, ...], tuple[Key, list[Any]]] = {}
    with side_connection(side) as conn:
        for row in conn.execute(query):
            key = tuple(row[:n])
            out[key_token(key_rules, key)] = (key, list(row[n:]))
    return out
