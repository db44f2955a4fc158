"""Counting rows while the application keeps writing.

Under dual-write, source and target counts taken a moment apart differ by the writes in
flight. Each insert or delete changes a count by one (updates by none), and the dual-writer
reports them to the control store (``so_metrics``, flushed every second), so a target count
taken between two source counts ``a`` and ``b`` is consistent when it lies in
``[min(a, b) - w, max(a, b) + w]``, ``w`` being the count-changing writes reported around
that window.
With no dual-writer reporting (old store only, trigger capture), ``w`` is zero and the
comparison is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from shiftover.control.store import utcnow
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.metrics import ROW_COUNT_CHANGES, sum_metrics
from shiftover.migration import Migration
from shiftover.rowsync import count_rows

T = TypeVar("T")

METRICS_FLUSH_SECONDS = 1.0  # the dual-writer's reporting interval (DualWriter.metrics_interval)
POLL_SECONDS = 0.1  # how often the reported writes are read again while the band does not hold the target
_LOOKBACK = timedelta(seconds=2)  # writes started shortly before the window may still be in flight


@dataclass(frozen=True)
class CountBand:
    source_before: int
    source_after: int
    writes_in_window: int

    @property
    def low(self) -> int:
        return min(self.source_before, self.source_after) - self.writes_in_window

    @property
    def high(self) -> int:
        return max(self.source_before, self.source_after) + self.writes_in_window

    def holds(self, target_rows: int) -> bool:
        return self.low <= target_rows <= self.high

    def describe(self) -> str:
        if self.writes_in_window == 0 and self.source_before == self.source_after:
            return f"source {self.source_before} rows (no writes in flight)"
        return (
            f"source {self.source_before}..{self.source_after} rows with {self.writes_in_window} "
            f"application writes in flight: consistent range {self.low}..{self.high}"
        )


def count_source(migration: Migration) -> int:
    return count_rows(migration.source, migration.mapping.source_table_obj(migration.source))


def around_source_counts(
    migration: Migration,
    measure_target: Callable[[int], T],
    target_rows: Callable[[T], int | None] = lambda _result: None,
) -> tuple[T, CountBand]:
    """Run ``measure_target(source_count)`` between two source counts; return its result and the band.

    Under dual-write, the writes in the window are known only once every dual-writer has reported
    them (each flushes every ``METRICS_FLUSH_SECONDS``). The reported writes only ever widen the
    band, so the wait ends as soon as the band holds the target's count (``target_rows`` of the
    result): waiting longer could not change the verdict. A target outside the band (or a result
    with no count) waits the full flush interval for the last reports, then is judged."""
    window_start = utcnow() - _LOOKBACK
    before = count_source(migration)
    result = measure_target(before)
    after = count_source(migration)
    if read_routing(migration.store.engine, migration.name).writes is WriteMode.OLD_ONLY:
        return result, CountBand(before, after, 0)
    target = target_rows(result)
    deadline = time.monotonic() + METRICS_FLUSH_SECONDS + 0.2  # every dual-writer has flushed the window by then
    while True:
        writes = int(
            sum_metrics(migration.store.engine, migration.name, [ROW_COUNT_CHANGES], window_start)[ROW_COUNT_CHANGES]
        )
        band = CountBand(before, after, writes)
        if (target is not None and band.holds(target)) or time.monotonic() >= deadline:
            return result, band
        time.sleep(POLL_SECONDS)
