"""Prefect tasks of the backfill: one coarse task per segment (many chunks, one checkpoint each)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiftover.backfill import SegmentReport, Throttle, copy_segment
from shiftover.migration import Migration


@task(name="copy-segment", cache_policy=NO_CACHE, task_run_name="copy-segment-{segment}")
def copy_segment_task(migration: Migration, segment: int, throttle: Throttle, deadline: float | None) -> SegmentReport:
    """Copy what remains of one segment. Lost connections are retried inside, from the checkpoint;
    Prefect retries are off because a data error will not go away by itself."""
    return copy_segment(
        migration.source,
        migration.target,
        migration.store.engine,
        migration.mapping,
        migration.name,
        segment,
        throttle,
        deadline=deadline,
    )
