"""Mode ``dask`` of a distributed backfill: the one worker loop (``copy_claimed_segments``, through
``WorkerJob``) submitted as a long-running task to each worker of a ``dask.distributed`` cluster
(``shiftover.control.dask_loops``: placement, rounds, why not prefect-dask).

The parent (``run_dask_backfill``) watches the checkpoints: a Dask worker that dies loses its
segment leases, and the loops left take its segment over from its checkpoint once the lease
expires. The task's arguments travel through the scheduler: give the control store as a
``${NAME}`` reference (resolved in each Dask worker's environment) to keep its password off the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shiftover.backfill.workers import (
    DistributedProgress,
    DistributedSettings,
    WorkerJob,
    distributed_progress,
)
from shiftover.control import dask_loops
from shiftover.control.dask_loops import MAX_ROUNDS, DaskLoops, LoopsOutcome, scheduler_client
from shiftover.migration import Migration

SECTION = "backfill.distributed"
__all__ = ["MAX_ROUNDS", "DaskOutcome", "connect_scheduler", "run_dask_backfill"]


def connect_scheduler(address: str, *, timeout: float = dask_loops.CONNECT_SECONDS) -> Any:
    """``dask_loops.connect_scheduler``, its problems named under ``backfill.distributed``."""
    return dask_loops.connect_scheduler(address, SECTION, timeout=timeout)


@dataclass(frozen=True)
class CopyLoop:
    """The backfill's loop as a Dask task: ``WorkerJob.run`` under the holder id it is given."""

    job: WorkerJob
    ttl: float

    def __call__(self, holder: str) -> dict[str, Any]:
        return self.job.run(holder, self.ttl).as_dict()


@dataclass
class DaskOutcome(LoopsOutcome):
    """The loops' outcome, and the checkpoints before and after."""

    rows_before: int = 0
    progress: DistributedProgress | None = None

    @property
    def rows_copied(self) -> int:
        """Rows the checkpoints moved during this run (a killed loop's rows included)."""
        return (self.progress.rows_copied if self.progress else 0) - self.rows_before

    @property
    def rows_inserted_by_returned_loops(self) -> int:
        """Rows inserted, as the loops that returned reported them: a lower bound. A loop that died
        or failed reports nothing, and no store counts inserts (a checkpoint counts rows copied,
        which include keys the target already held): ``rows_copied`` is the run's complete count."""
        return sum(int(r["rows_inserted"]) for r in self.reports)


def run_dask_backfill(
    migration: Migration,
    settings: DistributedSettings,
    *,
    control_url: str | None = None,
    client: Any = None,
    tick: Callable[[], None] | None = None,
    every: float = 1.0,
    grace: float = 10.0,
    log: Callable[[str], None] = lambda _: None,
) -> DaskOutcome:
    """Copy the saved plan with ``settings.workers`` loops on the Dask cluster; return when every
    segment is done or failed (or every round's loops ended with segments left).

    ``control_url``: as the run got it (a ``${NAME}`` reference stays one, resolved on each Dask
    worker); ``client``: a connected one (else ``connect_scheduler(settings.scheduler)``, closed
    after); ``tick``: called every ``every`` seconds while the loops run (progress, throttle mirror)."""
    engine = migration.store.engine
    loop = CopyLoop(WorkerJob.of(migration, control_url), settings.lease_ttl_seconds)
    outcome = DaskOutcome(rows_before=distributed_progress(migration.name, engine).rows_copied)

    def left() -> int:
        state = distributed_progress(migration.name, engine)
        return state.segments - state.segments_done - state.segments_failed

    with scheduler_client(client, settings.scheduler, SECTION) as connected:
        loops = DaskLoops(connected, loop, settings.workers, "backfill", SECTION)
        loops.run(outcome, left, tick=tick, every=every, grace=grace, log=log)
    outcome.progress = distributed_progress(migration.name, engine)
    return outcome
