"""One worker of a distributed backfill: claims segments by lease in the control store and copies
them until none is left (``shiftover.backfill.workers.copy_claimed_segments``). Start any number,
on any machine, once a parent has planned the segments (the ``backfill`` flow with
``distributed``, or ``plan_distributed``); a worker that dies loses its leases and the others
finish its segments from their checkpoints. Needs a PostgreSQL or MariaDB control store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from shiftover.backfill.leases import DEFAULT_SEGMENT_TTL_SECONDS
from shiftover.backfill.workers import copy_claimed_segments
from shiftover.control.store import DEFAULT_URL
from shiftover.flows.context import run_holder
from shiftover.flows.credentials import admit_control_url
from shiftover.migration import load_migration


@flow(name="backfill-worker")
def backfill_worker(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    worker_id: str | None = None,
    lease_ttl_seconds: float = DEFAULT_SEGMENT_TTL_SECONDS,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Copy claimed segments of a planned distributed backfill until every segment is done."""
    admit_control_url(control_url)
    migration = load_migration(spec_path, control_url, register=False, needed_by="the 'backfill-worker' flow")
    # the flow run's id: host-pid repeats across containers, and a worker re-claims segments held
    # under its own id
    worker = worker_id or run_holder()
    report = copy_claimed_segments(migration, worker, ttl=lease_ttl_seconds, max_seconds=max_seconds)
    get_run_logger().info("backfill worker %s: %s", worker, report.as_dict())
    return report.as_dict()
