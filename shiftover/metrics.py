"""The counters a dual-writer reports and the gates read, batched into ``so_metrics``.

Counters (reads, mismatches, writes, secondary errors, timings) and sampled shadow mismatch
rows are buffered in memory by a ``Recorder`` and written to the control store in batches, so
a busy application pays no round trip per request and a bad migration cannot flood the store.
The queries below sum them for the traffic gates, the live counts and the timeline.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import key_to_json, utcnow

log = logging.getLogger(__name__)

# Counter names in so_metrics.
SHADOW_READS = "shadow_reads"
SHADOW_MISMATCHES = "shadow_mismatches"
SHADOW_ERRORS = "shadow_errors"
SHADOW_NEW_MS = "shadow_new_ms"  # sum of milliseconds spent on the shadow side
WRITES = "writes"
ROW_COUNT_CHANGES = "row_count_changes"  # inserts, upserts (they may insert) and deletes: what moves a count
SECONDARY_WRITES = "secondary_writes"
SECONDARY_ERRORS = "secondary_errors"
QUEUE_OVERFLOWS = "queue_overflows"
ENQUEUED = "reconcile_enqueued"


def _jsonable(row: Mapping[str, Any] | None, columns: list[str]) -> Any:
    if row is None:
        return None
    picked = row if columns == ["*"] else {c: row.get(c) for c in columns}
    return json.loads(json.dumps(dict(picked), default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


class Recorder:
    """Buffers counters and mismatch rows for one migration; ``flush`` writes them in one transaction.

    A failed flush keeps the counters for the next one (mismatch rows beyond the cap are dropped,
    counted all the same). Thread-safe.
    """

    def __init__(self, store: Engine, migration: str, *, max_mismatch_rows: int = 100) -> None:
        self.store = store
        self.migration = migration
        self.max_mismatch_rows = max_mismatch_rows
        self._lock = threading.Lock()
        self._counters: defaultdict[str, float] = defaultdict(float)
        self._mismatches: list[dict[str, Any]] = []

    def count(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._counters[name] += value

    def mismatch(self, key: tuple[Any, ...], columns: list[str], old: Any, new: Any) -> None:
        with self._lock:
            self._counters[SHADOW_MISMATCHES] += 1
            if len(self._mismatches) < self.max_mismatch_rows:
                self._mismatches.append(
                    {
                        "migration": self.migration,
                        "key_json": key_to_json(key),
                        "columns": columns,
                        "old_value": _jsonable(old, columns),
                        "new_value": _jsonable(new, columns),
                        "at": utcnow(),
                    }
                )

    def flush(self) -> bool:
        with self._lock:
            counters, self._counters = self._counters, defaultdict(float)
            mismatches, self._mismatches = self._mismatches, []
        if not counters and not mismatches:
            return True
        now = utcnow()
        rows = [
            {"migration": self.migration, "name": n, "value": float(v), "at": now} for n, v in counters.items() if v
        ]
        try:
            with self.store.begin() as conn:
                if rows:
                    conn.execute(schema.metrics.insert(), rows)
                if mismatches:
                    conn.execute(schema.shadow_mismatches.insert(), mismatches)
        except Exception as exc:
            log.warning("could not write metrics to the control store (%s); kept for the next flush", exc)
            with self._lock:
                for name, value in counters.items():
                    self._counters[name] += value
            return False
        return True


def sum_metrics(store_engine: Engine, migration: str, names: list[str], since: datetime) -> dict[str, float]:
    """Sum of each named counter recorded at or after ``since`` (zeros included)."""
    m = schema.metrics
    query = (
        sa.select(m.c.name, sa.func.sum(m.c.value))
        .where(m.c.migration == migration, m.c.name.in_(names), m.c.at >= since)
        .group_by(m.c.name)
    )
    out = dict.fromkeys(names, 0.0)
    with store_engine.connect() as conn:
        for name, total in conn.execute(query):
            out[name] = float(total or 0)
    return out


def mismatch_rate(store_engine: Engine, migration: str, since: datetime) -> tuple[int, int]:
    """(shadow reads, mismatches) recorded since ``since``: what the shadow_mismatch gate reads."""
    sums = sum_metrics(store_engine, migration, [SHADOW_READS, SHADOW_MISMATCHES], since)
    return int(sums[SHADOW_READS]), int(sums[SHADOW_MISMATCHES])


def shadow_errors(store_engine: Engine, migration: str, since: datetime) -> int:
    """Shadow comparisons that could not run since ``since`` (the other side failed to read, an
    expression raised): each is a read nobody judged, which a gate must not take for agreement."""
    return int(sum_metrics(store_engine, migration, [SHADOW_ERRORS], since)[SHADOW_ERRORS])


def error_rate(store_engine: Engine, migration: str, since: datetime) -> tuple[int, int]:
    """(secondary writes attempted, secondary writes failed) since ``since``."""
    sums = sum_metrics(store_engine, migration, [SECONDARY_WRITES, SECONDARY_ERRORS], since)
    return int(sums[SECONDARY_WRITES]), int(sums[SECONDARY_ERRORS])


def recent_mismatches(store_engine: Engine, migration: str, since: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """The latest sampled mismatch rows since ``since``: the evidence the shadow_mismatch gate shows."""
    t = schema.shadow_mismatches
    query = (
        sa.select(t.c.key_json, t.c.columns, t.c.old_value, t.c.new_value, t.c.at)
        .where(t.c.migration == migration, t.c.at >= since)
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with store_engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
