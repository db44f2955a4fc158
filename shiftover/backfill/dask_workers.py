"""Mode ``dask`` of a distributed backfill: the one worker loop (``copy_claimed_segments``, through
``WorkerJob``) submitted as a long-running task to each worker of a ``dask.distributed`` cluster.

Leases, fenced checkpoints and the shared rows/s budget are the control store's, as in the other
modes: Dask only places the loops. The parent (``run_dask_backfill``) watches the control store,
not the tasks: a Dask worker that dies loses its segment leases, and the loops left take its
segment over from its checkpoint once the lease expires. Dask also re-runs a dead worker's task on
a live worker (loose placement); that loop gets a new holder id, so it never writes under the dead
loop's fence. When every loop has ended and unfinished segments are left, the parent submits
another round, up to ``MAX_ROUNDS`` in all.

Why a plain ``distributed.Client`` and not prefect-dask's ``DaskTaskRunner``: the runner is fixed
on a flow when it is declared, while the scheduler comes from the spec at run time; it submits
Prefect task runs with ``pure=True`` and no placement, so two loops may share a Dask worker while
another idles; and each task run reports its state to the Prefect API from the Dask worker, so a
task Dask re-runs after its worker died meets a run already Running. The loop needs none of it:
it is plain code (this package never imports Prefect), and the Dask workers need Shiftover and
the databases, not the Prefect API.

The task's arguments travel through the scheduler: give the control store as a ``${NAME}``
reference (resolved in each Dask worker's environment) to keep its password off the wire.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shiftover.backfill.workers import (
    DistributedProgress,
    DistributedSettings,
    WorkerJob,
    distributed_progress,
)
from shiftover.credentials import resolve
from shiftover.errors import SpecError
from shiftover.migration import Migration
from shiftover.spec import scheduler_address_problem

SCHEDULER_FIELD = "backfill.distributed.scheduler"
MAX_ROUNDS = 3  # loop submissions in all: the first, and two to resume what every loop left
CONNECT_SECONDS = 10.0
WORKERS_SECONDS = 60.0  # how long a run waits for the cluster's first worker


def connect_scheduler(address: str, *, timeout: float = CONNECT_SECONDS) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (a ``${NAME}`` reference is resolved
    here); a missing package, a malformed address or no answer is a ``SpecError`` naming the field."""
    try:
        from distributed import Client
    except ImportError:
        raise SpecError(
            "backfill.distributed.mode",
            "mode dask needs the distributed package in the run's environment: pip install 'shiftover[dask]'",
        ) from None
    resolved = resolve(address)
    problem = scheduler_address_problem(resolved)
    if problem is not None:
        raise SpecError(SCHEDULER_FIELD, f"{address}: {problem}")
    try:
        return Client(resolved, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SpecError(
            SCHEDULER_FIELD, f"no Dask scheduler answered at {resolved} within {timeout:g} s ({exc.__class__.__name__})"
        ) from None


def dask_workers(client: Any, *, timeout: float = WORKERS_SECONDS) -> list[str]:
    """The cluster's worker addresses, sorted; waits up to ``timeout`` for the first one."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise SpecError(
            SCHEDULER_FIELD, f"the Dask scheduler at {client.scheduler.address} has no worker after {timeout:g} s"
        ) from None
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def run_loop_on_dask_worker(job: WorkerJob, prefix: str, ttl: float) -> dict[str, Any]:
    """The task each Dask worker runs: the worker loop under a holder id of its own (the Dask worker's
    name, host and pid, and a fresh suffix: a re-run of this task after a worker died must not
    write under the dead loop's fence). Returns the loop's report."""
    from distributed import get_worker

    parts = [prefix, str(get_worker().name)[:60], socket.gethostname()[:64], str(os.getpid()), uuid.uuid4().hex[:6]]
    return job.run("-".join(parts), ttl).as_dict()  # under the 200 characters of ``lease_holder``


@dataclass
class DaskOutcome:
    """What the parent saw: the loops' reports, the loops that failed (their errors), rounds submitted."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unfinished_loops: int = 0  # still running when the parent stopped waiting for them
    rounds: int = 0
    dask_workers: int = 0
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


def submit_loops(client: Any, job: WorkerJob, settings: DistributedSettings, prefix: str, round_: int) -> list[Any]:
    """``settings.workers`` loops, loop i placed on the cluster's worker i mod n (loosely: Dask may
    move it to a live worker if that one is gone)."""
    addresses = dask_workers(client)
    return [
        client.submit(
            run_loop_on_dask_worker,
            job,
            prefix,
            settings.lease_ttl_seconds,
            key=f"shiftover-backfill-{prefix}-r{round_}-{i}",
            workers=[addresses[i % len(addresses)]],
            allow_other_workers=True,
            pure=False,
        )
        for i in range(settings.workers)
    ]


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
    owned = client is None
    if client is None:
        if settings.scheduler is None:
            raise SpecError(SCHEDULER_FIELD, "mode dask needs the Dask scheduler's address")
        client = connect_scheduler(settings.scheduler)
    engine = migration.store.engine
    job = WorkerJob.of(migration, control_url)
    prefix = f"dask-{uuid.uuid4().hex[:8]}"  # this run's loops (the migration is the checkpoint row's key)
    outcome = DaskOutcome(rows_before=distributed_progress(migration.name, engine).rows_copied)
    try:
        loops = submit_loops(client, job, settings, prefix, 1)
        outcome.rounds, outcome.dask_workers = 1, len(dask_workers(client))
        log(f"submitted {len(loops)} backfill loops to {outcome.dask_workers} Dask workers")
        while True:
            if tick is not None:
                tick()
            state = distributed_progress(migration.name, engine)
            if state.segments_done + state.segments_failed == state.segments:
                break
            if all(f.done() for f in loops):  # every loop ended, yet segments are left
                if outcome.rounds >= MAX_ROUNDS:
                    log(f"every Dask loop ended after {outcome.rounds} rounds with segments left; stopping")
                    break
                outcome.rounds += 1
                loops += submit_loops(client, job, settings, prefix, outcome.rounds)
                log(f"round {outcome.rounds}: {state.segments - state.segments_done} segments left")
            time.sleep(every)
        if tick is not None:
            tick()
        _collect(client, loops, outcome, grace)
    finally:
        if owned:
            client.close()
    outcome.progress = distributed_progress(migration.name, engine)
    return outcome


def _collect(client: Any, loops: list[Any], outcome: DaskOutcome, grace: float) -> None:
    """Give the loops ``grace`` seconds to end on their own (nothing is left to claim), read their
    reports and errors, and release the rest (a hung loop; Dask cannot stop a running task)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(f.done() for f in loops):
        time.sleep(0.2)
    for f in loops:
        if f.status == "finished":
            outcome.reports.append(f.result())
        elif f.status == "error":
            outcome.errors.append(f"{f.key}: {f.exception()!r}")
    left = [f for f in loops if not f.done()]
    outcome.unfinished_loops = len(left)
    if left:
        client.cancel(left)
