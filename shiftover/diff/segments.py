"""Key ranges: the segments a diff is cut into, and their SQL predicates.

A range is ``lo < key <= hi`` (tuple comparison for composite keys); ``None`` leaves an end
open, so the first and last segments also catch rows outside the source's key span (extras
in the target). Integer keys are cut by arithmetic; other keys by sampling the source's keys
in key order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.diff.report import Key
from shiftover.engines import dialect_for
from shiftover.rowsync import key_compare


@dataclass(frozen=True)
class KeyRange:
    lo: Key | None  # exclusive; None: open
    hi: Key | None  # inclusive; None: open

    def to_json(self) -> tuple[str | None, str | None]:
        return (_dump(self.lo), _dump(self.hi))

    @classmethod
    def from_json(cls, lo: str | None, hi: str | None) -> KeyRange:
        return cls(_load(lo), _load(hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else _show(self.lo)
        hi = "+inf" if self.hi is None else _show(self.hi)
        return f"({lo}, {hi}]"


def _show(key: Key) -> str:
    return str(key[0]) if len(key) == 1 else str(key)


def _dump(key: Key | None) -> str | None:
    return None if key is None else json.dumps(list(key), default=str)


def _load(text: str | None) -> Key | None:
    return None if text is None else tuple(json.loads(text))


def range_clause(
    cols: Sequence[sa.ColumnElement[Any]], rng: KeyRange, *, tuples: bool = True
) -> sa.ColumnElement[bool]:
    """``lo < key <= hi`` over the key columns (``tuples``: the engine indexes row comparisons;
    otherwise spelt out, see ``rowsync.key_compare``)."""
    clauses = []
    if rng.lo is not None:
        clauses.append(key_compare(cols, rng.lo, strict=True, greater=True, tuples=tuples))
    if rng.hi is not None:
        clauses.append(key_compare(cols, rng.hi, strict=False, greater=False, tuples=tuples))
    return sa.and_(sa.true(), *clauses)


def integer_ranges(lo: int, hi: int, parts: int) -> list[KeyRange]:
    """``parts`` ranges covering [lo, hi], the outer ones open-ended."""
    width = max(1, -(-(hi - lo + 1) // parts))
    cuts = list(range(lo - 1 + width, hi, width))
    bounds: list[Key | None] = [None, *[(c,) for c in cuts], None]
    return [KeyRange(a, b) for a, b in pairwise(bounds)]


def integer_span(rng: KeyRange, lo: int, hi: int) -> tuple[int, int]:
    """The closed integer interval a range covers, clipped to the data's [lo, hi]."""
    start = lo if rng.lo is None else max(lo, int(rng.lo[0]) + 1)
    end = hi if rng.hi is None else min(hi, int(rng.hi[0]))
    return start, end


def sampled_ranges(
    engine: Engine, table: sa.Table, key: Sequence[str], rng: KeyRange, parts: int, rows: int
) -> list[KeyRange]:
    """Cut ``rng`` into about ``parts`` ranges of equal row counts by sampling keys in order."""
    if rows <= parts or parts < 2:
        return [rng]
    step = max(1, rows // parts)
    cols = [table.c[k] for k in key]
    numbered = (
        sa.select(*cols, sa.func.row_number().over(order_by=cols).label("so_rn"))
        .where(range_clause(cols, rng, tuples=dialect_for(engine).row_value_compare))
        .subquery()
    )
    query = (
        sa.select(*(numbered.c[k] for k in key))
        .where(numbered.c.so_rn % step == 0)
        .order_by(*(numbered.c[k] for k in key))
    )
    with engine.connect() as conn:
        cuts = [tuple(r) for r in conn.execute(query)][: parts - 1]
    bounds: list[Key | None] = [rng.lo, *cuts, rng.hi]
    return [KeyRange(a, b) for a, b in pairwise(bounds) if a != b]
