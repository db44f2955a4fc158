"""What the rehearsal rehearses: a bounded sample of source keys, and the compare rules.

The sample: the first and last key ranges, random keys (the engine's own sampler, as segment
planning uses), rows holding NULLs in mapped columns, and per column its smallest and largest
value (the longest text) while the table is small enough for a sort per column. At most
``wanted`` keys, NULL keys left out (they are a finding of their own). Where a run streams COPY
data (into PostgreSQL, without a transform), the first key range is also copied that way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import Key, KeyRange, estimate_rows, key_columns, sample_keys
from shiftover.diff.equality import column_rule
from shiftover.diff.normalize import ColumnRule
from shiftover.engines import run_sample
from shiftover.errors import DiffError
from shiftover.mapping import TableMapping
from shiftover.spec import ValidationSpec

EDGE_ROWS = 100  # first and last keys
RANDOM_ROWS = 500
NULL_ROWS = 50
EXTREMES_UP_TO_ROWS = 1_000_000  # one sort per column past this would cost more than seconds


@dataclass(frozen=True)
class Sample:
    keys: list[Key]
    first_range: KeyRange  # (start, last of the first keys]: copied whole as a run's COPY stream would


def source_sample(engine: Engine, table: sa.Table, mapping: TableMapping, wanted: int) -> Sample:
    """About ``wanted`` distinct source keys worth rehearsing (see the module docstring)."""
    cols = key_columns(table, mapping.key)
    has_key = sa.and_(*(c.is_not(None) for c in cols))
    edges = min(EDGE_ROWS, max(wanted // 4, 1))
    keys = run_sample(engine, sa.select(*cols).where(has_key).order_by(*cols).limit(edges))
    first_range = KeyRange(None, keys[-1] if keys else None)
    keys += run_sample(engine, sa.select(*cols).where(has_key).order_by(*(c.desc() for c in cols)).limit(edges))
    total = estimate_rows(engine, table)
    if total > 2 * edges:
        keys += _pick(sample_keys(engine, table, mapping.key, total, RANDOM_ROWS), RANDOM_ROWS)
    nullable = [table.c[c.source] for c in mapping.columns if c.sql is None and table.c[c.source].nullable]
    if nullable:
        query = sa.select(*cols).where(has_key, sa.or_(*(c.is_(None) for c in nullable))).limit(NULL_ROWS)
        keys += run_sample(engine, query)
    if total <= EXTREMES_UP_TO_ROWS:
        keys += _extremes(engine, table, mapping, has_key)
    keys = [k for k in dict.fromkeys(tuple(k) for k in keys) if all(v is not None for v in k)]
    return Sample(keys[:wanted], first_range)


def _extremes(engine: Engine, table: sa.Table, mapping: TableMapping, has_key: Any) -> list[Key]:
    """The key of each mapped column's smallest and largest value (longest, for text)."""
    cols = key_columns(table, mapping.key)
    out: list[Key] = []
    for col in (table.c[c.source] for c in mapping.columns if c.sql is None):
        if isinstance(col.type, sa.String) and not isinstance(col.type, sa.Enum):
            orders: list[Any] = [sa.func.length(col).desc()]
        elif isinstance(col.type, sa.Integer | sa.Numeric | sa.Date | sa.DateTime | sa.Time):
            orders = [col.asc(), col.desc()]
        else:
            continue
        for order in orders:
            out += run_sample(engine, sa.select(*cols).where(has_key, col.is_not(None)).order_by(order).limit(1))
    return out


def _pick(items: list[Key], wanted: int) -> list[Key]:
    """``wanted`` of ``items`` at random (all when fewer), order kept."""
    if len(items) <= wanted:
        return items
    return [items[i] for i in sorted(random.sample(range(len(items)), wanted))]


def column_rules(
    mapping: TableMapping, src: sa.Table, tgt: sa.Table, options: ValidationSpec
) -> tuple[dict[str, ColumnRule], dict[str, DiffError]]:
    """The compare rule of every mapped column not excluded, and the columns that have none (why)."""
    rules: dict[str, ColumnRule] = {}
    unusable: dict[str, DiffError] = {}
    for col in mapping.columns:
        if col.target in options.exclude or col.source in options.exclude:
            continue
        try:
            rules[col.target] = column_rule(col, src, tgt, strict=True)
        except DiffError as exc:
            unusable[col.target] = exc
    return rules, unusable
