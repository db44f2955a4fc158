"""One worker of a distributed validation diff: claims segments of a planned diff run by lease in
the control store, screens and narrows each, records its differences there
(``shiftover.diff.distributed.diff_claimed_segments``). The validate flow starts one run per worker
with ``validation.distributed.mode: deployment`` (``run_diff_child_runs``) and aggregates the run
into the checksum gate's report; a worker that dies loses its leases and the others redo its
segments. Needs a PostgreSQL or MariaDB control store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from shiftover.control.store import DEFAULT_URL, utcnow
from shiftover.diff.distributed import (
    MAX_ROUNDS,
    PENDING,
    DiffJob,
    DiffRun,
    diff_claimed_segments,
    read_segments,
    recorded_count,
)
from shiftover.errors import DiffError
from shiftover.flows.child_runs import all_gone, end_child_runs, launch_child_runs
from shiftover.flows.context import run_holder
from shiftover.flows.credentials import admit_control_url
from shiftover.migration import Migration, load_migration
from shiftover.spec import DiffDistributedSpec


@flow(name="diff-worker")
def diff_worker(
    spec_path: str,
    job: dict[str, Any],
    control_url: str = DEFAULT_URL,
    worker_id: str | None = None,
    lease_ttl_seconds: float = 30.0,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Diff claimed segments of the planned run ``job`` (``DiffJob.as_dict``) until none is left."""
    admit_control_url(control_url)
    migration = load_migration(spec_path, control_url, register=False, needed_by="the 'diff-worker' flow")
    worker = worker_id or run_holder()  # the flow run's id: host-pid repeats across containers
    report = diff_claimed_segments(
        migration, DiffJob.from_dict(job), worker, ttl=lease_ttl_seconds, max_seconds=max_seconds
    )
    get_run_logger().info("diff worker %s: %s", worker, report.as_dict())
    return report.as_dict()


class DiffChildRuns:
    """The validate flow's runner of a distributed diff's workers as child runs of
    ``validation.distributed.deployment``: the spec path and the control URL go to the children as
    this run got them (a ``${NAME}`` reference stays one, resolved by each child's environment)."""

    def __init__(self, spec_path: str, control_url: str) -> None:
        self.spec_path = str(Path(spec_path).resolve())
        self.control_url = control_url

    def __call__(self, run: DiffRun) -> None:
        run_diff_child_runs(run.migration, run.settings, run.job, self.spec_path, self.control_url, tick=run.tick)


def run_diff_child_runs(
    migration: Migration,
    settings: DiffDistributedSpec,
    job: DiffJob,
    spec_path: str,
    control_url: str,
    *,
    tick: Callable[[], None] | None = None,
) -> None:
    """Start ``settings.workers`` child runs and watch the control store until no segment is pending
    (or the run passed ``max_differences``), calling ``tick`` each second; when every child is gone
    with segments left, start another round, up to ``MAX_ROUNDS``; end the children still running."""
    engine, limit = migration.store.engine, migration.spec.validation.max_differences
    ttl = settings.lease_ttl_seconds
    parameters = {"spec_path": spec_path, "control_url": control_url, "job": job.as_dict(), "lease_ttl_seconds": ttl}
    children = launch_child_runs(settings.deployment, parameters, settings.workers, "diff-worker", 1)
    rounds, launched_at, grace = 1, time.monotonic(), max(4 * ttl, 10.0)
    try:
        while True:
            if tick is not None:
                tick()
            rows = read_segments(engine, migration.name, job.run_id)
            left = [r for r in rows if r.state == PENDING]
            if not left or recorded_count(engine, migration.name, job.run_id) > limit:
                return
            if all_gone(children, launched_at, grace, _stalled(left, 2 * ttl)):
                if rounds >= MAX_ROUNDS:
                    raise DiffError(f"diff run {job.run_id}: every worker gone after {rounds} rounds of child runs")
                rounds += 1
                children += launch_child_runs(
                    settings.deployment, parameters, min(settings.workers, len(left)), "diff-worker", rounds
                )
                launched_at = time.monotonic()
            time.sleep(1.0)
    finally:
        end_child_runs(children, grace=10.0, who="diff")


def _stalled(pending: list[Any], quiet_seconds: float) -> bool:
    """No pending segment is under a live lease or was renewed within ``quiet_seconds``."""
    now = utcnow()
    for r in pending:
        if r.expires_at is not None and r.expires_at > now:
            return False
        if r.heartbeat_at is not None and (now - r.heartbeat_at).total_seconds() < quiet_seconds:
            return False
    return True
