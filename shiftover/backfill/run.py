"""A whole backfill without Prefect: prepare (create target, check columns, plan), then run
the remaining segments in threads. The flow does the same with one Prefect task per segment."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from shiftover.backfill import checkpoints
from shiftover.backfill.copy import SegmentReport, copy_segment
from shiftover.backfill.keyset import plan_segments
from shiftover.backfill.leases import live_leases
from shiftover.backfill.throttle import Throttle
from shiftover.backfill.typemap import create_target_table
from shiftover.engines import dialect_for
from shiftover.errors import CopyError, SegmentsLeasedError
from shiftover.mapping import forget_reflections
from shiftover.migration import Migration


def check_column_set(migration: Migration) -> None:
    """The target holds every mapped column (else nothing is copied)."""
    forget_reflections()
    m = migration.mapping
    inspector = sa.inspect(migration.target)
    if not inspector.has_table(m.target_table, schema=m.target_schema):
        raise CopyError(m.target_table, "all keys", "the target table does not exist (set backfill.create_target?)")
    named = dialect_for(migration.target).reflected_name
    present = {named(c["name"]) for c in inspector.get_columns(m.target_table, schema=m.target_schema)}
    missing = [c for c in m.target_columns if c not in present]
    if missing:
        raise CopyError(m.target_table, "all keys", f"target table lacks column(s) {missing} of the mapping")


def prepare_backfill(
    migration: Migration, concurrency: int | None = None, *, segments: int | None = None
) -> tuple[list[checkpoints.SegmentState], int | None]:
    """Create the target if the spec asks, check it, and plan segments unless a plan is saved:
    ``segments`` of them, else two per concurrent copy (one when copying serially).

    Returns the plan and the source row estimate planning made (None for a saved plan).
    """
    if migration.spec.backfill.create_target:
        create_target_table(migration.source, migration.target, migration.mapping)
    check_column_set(migration)
    saved = checkpoints.load_plan(migration.store.engine, migration.name)
    if saved:
        return saved, None
    if segments is None:
        count = concurrency or migration.spec.backfill.concurrency
        segments = count * 2 if count > 1 else 1
    planned, total = plan_segments(migration.source, migration.mapping, segments)
    return checkpoints.save_plan(migration.store.engine, migration.name, planned), total


def make_throttle(migration: Migration, **options: Any) -> Throttle:
    """The run's one throttle: spec settings, the flag store for run-time changes, the lag probe."""
    return Throttle(
        migration.spec.backfill,
        store_engine=migration.store.engine,
        migration=migration.name,
        lag_engine=migration.source,
        **options,
    )


@dataclass
class BackfillSummary:
    rows_copied: int
    rows_inserted: int
    seconds: float
    segments: int
    complete: bool
    reports: list[SegmentReport] = field(default_factory=list)
    stalled_workers: dict[str, str] = field(default_factory=dict)  # worker processes the run ended, and why

    @property
    def rows_per_second(self) -> float:
        return self.rows_copied / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_copied": self.rows_copied,
            "rows_inserted": self.rows_inserted,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "segments": self.segments,
            "complete": self.complete,
            "state": "complete" if self.complete else "incomplete",
            **({"stalled_workers": self.stalled_workers} if self.stalled_workers else {}),
        }


def summarise(reports: list[SegmentReport], seconds: float, segments: int) -> BackfillSummary:
    return BackfillSummary(
        rows_copied=sum(r.rows_read for r in reports),
        rows_inserted=sum(r.rows_inserted for r in reports),
        seconds=seconds,
        segments=segments,
        complete=all(r.complete for r in reports),
        reports=reports,
    )


def run_backfill(
    migration: Migration,
    *,
    concurrency: int | None = None,
    time_budget_seconds: float | None = None,
    throttle: Throttle | None = None,
) -> BackfillSummary:
    """Copy every unfinished segment, ``concurrency`` at a time; resumable after any stop.

    Refused (``SegmentsLeasedError``) while workers of a distributed run still hold segments: this
    copy is not fenced by segment leases, so it would copy their segments beside them."""
    held = live_leases(migration.store.engine, migration.name)
    if held:
        raise SegmentsLeasedError(migration.name, held)
    started = time.monotonic()
    deadline = time.time() + time_budget_seconds if time_budget_seconds else None
    plan, _ = prepare_backfill(migration, concurrency)
    throttle = throttle or make_throttle(migration)
    todo = [s.segment.index for s in plan if not s.done]
    workers = max(1, min(concurrency or migration.spec.backfill.concurrency, len(todo) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segment") as pool:
        futures = [
            pool.submit(
                copy_segment,
                migration.source,
                migration.target,
                migration.store.engine,
                migration.mapping,
                migration.name,
                index,
                throttle,
                deadline=deadline,
            )
            for index in todo
        ]
        reports = [f.result() for f in futures]
    return summarise(reports, time.monotonic() - started, len(plan))
