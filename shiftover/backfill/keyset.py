"""Keyset ranges over any key (integer, UUID, text, composite) and segments planned from sampled quantiles.

A ``KeyRange`` is ``(lo, hi]``: ``lo`` exclusive, ``hi`` inclusive, ``None`` for an open end.
Every comparison and every ORDER BY runs in the source database, so its collation decides
the order of text keys; no OFFSET from the start of the table is ever used.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control.store import key_to_json
from shiftover.engines import EngineDialect, dialect_for, run_sample
from shiftover.errors import CopyError
from shiftover.mapping import TableMapping
from shiftover.rowsync import count_rows, key_compare, table_stats

Key = tuple[Any, ...]

SAMPLES_PER_SEGMENT = 64


@dataclass(frozen=True)
class KeyRange:
    lo: Key | None  # exclusive; None: from the first key
    hi: Key | None  # inclusive; None: to the last key

    def describe(self) -> str:
        lo = key_to_json(self.lo) if self.lo is not None else "start"
        hi = key_to_json(self.hi) if self.hi is not None else "end"
        return f"keys ({lo}, {hi}]"


@dataclass(frozen=True)
class Segment:
    index: int
    range: KeyRange


def key_columns(table: sa.Table, key: tuple[str, ...]) -> list[sa.Column[Any]]:
    return [table.c[k] for k in key]


def range_clause(
    table: sa.Table, key: tuple[str, ...], lo: Key | None, hi: Key | None, dialect: EngineDialect
) -> sa.ColumnElement[bool]:
    """``key > lo AND key <= hi`` for a key of any width."""
    cols = key_columns(table, key)
    tuples = dialect.row_value_compare  # PostgreSQL and SQLite index row comparisons; MySQL not reliably
    parts: list[sa.ColumnElement[bool]] = []
    if lo is not None:
        parts.append(_compare(cols, lo, strict=True, greater=True, tuples=tuples))
    if hi is not None:
        parts.append(_compare(cols, hi, strict=False, greater=False, tuples=tuples))
    return sa.and_(sa.true(), *parts)


def _compare(
    cols: list[sa.Column[Any]], values: Key, *, strict: bool, greater: bool, tuples: bool
) -> sa.ColumnElement[bool]:
    binds = [sa.bindparam(None, coerce_key_value(c, v), type_=c.type) for c, v in zip(cols, values, strict=True)]
    return key_compare(cols, binds, strict=strict, greater=greater, tuples=tuples)


def coerce_key_value(column: sa.Column[Any], value: Any) -> Any:
    """A key value read back from JSON, as the column's Python type (UUIDs and datetimes are text in JSON)."""
    if value is None or not isinstance(value, str):
        return value
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if python_type is date:
        return date.fromisoformat(value)
    if python_type is Decimal:
        return Decimal(value)
    return value


def estimate_rows(engine: Engine, table: sa.Table) -> int:
    """The engine's row estimate where it keeps one (no full scan), else an exact count."""
    return table_stats(engine, table).rows or count_rows(engine, table)


def count_null_keys(engine: Engine, table: sa.Table, key: tuple[str, ...]) -> int:
    """Rows with NULL in a key column (0 without a scan when the key columns are NOT NULL)."""
    if all(not c.nullable for c in key_columns(table, key)):
        return 0  # NOT NULL (a primary key): nothing to scan for
    nulls = sa.or_(*(c.is_(None) for c in key_columns(table, key)))
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(nulls)).scalar_one())


def check_key_not_null(engine: Engine, table: sa.Table, key: tuple[str, ...]) -> None:
    """A key with NULLs cannot be paged by keyset: refuse before anything is copied."""
    count = count_null_keys(engine, table, key)
    if count:
        raise CopyError(table.name, "all keys", f"{count} row(s) have NULL in key column(s) {list(key)}")


def sample_keys(engine: Engine, table: sa.Table, key: tuple[str, ...], total: int, wanted: int) -> list[Key]:
    """About ``wanted`` keys sampled at random, sorted by the database (its collation)."""
    if wanted >= max(total, 1):
        cols = key_columns(table, key)
        return run_sample(engine, sa.select(*cols).order_by(*cols))
    return dialect_for(engine).sample_keys(engine, table, key, total, wanted)


def plan_segments(engine: Engine, mapping: TableMapping, count: int) -> tuple[list[Segment], int]:
    """Split the source key space into up to ``count`` segments of similar row counts.

    Boundaries are quantiles of a random sample (not min/max arithmetic, which fails on
    gapped, UUID and text keys). The first and last segments are open so rows added after
    planning still fall into one. Returns the segments and the (estimated) source row count.
    """
    table = mapping.source_table_obj(engine)
    check_key_not_null(engine, table, mapping.key)
    total = estimate_rows(engine, table)
    if count <= 1 or total < count * 2:
        return [Segment(0, KeyRange(None, None))], total
    sample = sample_keys(engine, table, mapping.key, total, count * SAMPLES_PER_SEGMENT)
    bounds: list[Key] = []
    for i in range(1, count):
        if not sample:
            break
        candidate = sample[min(len(sample) - 1, i * len(sample) // count)]
        if not bounds or candidate != bounds[-1]:
            bounds.append(candidate)
    edges: list[Key | None] = [None, *bounds, None]
    segments = [Segment(i, KeyRange(edges[i], edges[i + 1])) for i in range(len(edges) - 1)]
    return segments, total
