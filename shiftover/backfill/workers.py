"""A distributed backfill: plan segments once, then any number of workers (processes, machines,
Prefect child runs, Dask workers) claim segments by lease and copy them until none is left.

``plan_distributed`` runs once (the parent); ``copy_claimed_segments`` is one worker's loop;
``start_worker_processes`` starts N local OS processes of that loop (``python -m
shiftover.backfill.workers``), ``run_worker_processes`` runs rounds of them, ending stalled ones,
and ``dask_workers`` runs the same loop on a Dask cluster (both through ``WorkerJob``);
``distributed_progress`` aggregates the checkpoints. The claim loop, the
leases and the processes are ``shiftover.control``'s (``segment_leases``, ``worker_processes``),
shared with the distributed validation diff.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.budget import ensure_budget
from shiftover.backfill.copy import SegmentReport, copy_segment
from shiftover.backfill.run import make_throttle, prepare_backfill
from shiftover.backfill.throttle import Throttle
from shiftover.control import worker_processes
from shiftover.control.segment_leases import DEFAULT_STALL_SECONDS, SegmentLease, work_claimed_segments
from shiftover.control.store import utcnow
from shiftover.control.work_progress import WorkProgress
from shiftover.control.worker_processes import SegmentView, StallWatch, worker_name
from shiftover.control.worker_processes import WorkerExit as WorkerExit  # re-exported: their home is control
from shiftover.control.worker_processes import wait_for_workers as wait_for_workers
from shiftover.migration import Migration
from shiftover.spec import BackfillSpec, DistributedSpec


def plan_distributed(migration: Migration, segments: int) -> list[checkpoints.SegmentState]:
    """``prepare_backfill`` for workers: refuses a SQLite control store, then creates/checks the
    target and saves a plan of up to ``segments`` segments (kept if one exists)."""
    leases.require_distributed_store(migration.store.engine)
    plan = prepare_backfill(migration, segments=segments)[0]
    ensure_budget(migration.store.engine, migration.name)
    return plan


@dataclass(frozen=True)
class DistributedSettings:
    """How a distributed backfill runs: the spec's ``backfill.distributed``, or a run's ``distributed=N``
    (local processes, the spec's other settings or their defaults)."""

    workers: int
    mode: str  # processes | deployment | dask
    deployment: str
    segments_per_worker: int
    lease_ttl_seconds: float
    from_spec: bool  # the spec asked (refusals name ``backfill.distributed``)
    scheduler: str | None = None  # mode dask: the scheduler's address, or a reference to it

    @property
    def segments(self) -> int:
        return self.workers * self.segments_per_worker


def distributed_settings(spec: BackfillSpec, workers: int | None = None) -> DistributedSettings | None:
    """The run's distribution, or None for an in-process backfill. ``workers`` (a run's parameter)
    overrides the spec's count and, without ``backfill.distributed``, means local processes."""
    declared = spec.distributed
    if declared is None:
        if not workers:
            return None
        defaults = DistributedSpec(workers=workers)
        return DistributedSettings(
            workers, "processes", defaults.deployment, defaults.segments_per_worker, defaults.lease_ttl_seconds, False
        )
    return DistributedSettings(
        workers or declared.workers,
        declared.mode,
        declared.deployment,
        declared.segments_per_worker,
        declared.lease_ttl_seconds,
        True,
        declared.scheduler,
    )


def require_distributed(migration: Migration, settings: DistributedSettings) -> None:
    """Refuse a SQLite control store, naming ``backfill.distributed`` when the spec asked."""
    leases.require_distributed_store(migration.store.engine, "backfill.distributed" if settings.from_spec else None)


def stalled(migration: str, engine: Any, *, quiet_seconds: float) -> bool:
    """Whether unfinished segments are left that no worker holds: none is under a live lease and
    none was renewed or claimed for ``quiet_seconds`` (every worker gone: a parent starts more)."""
    rows = [r for r in leases.read_leases(engine, migration) if r.state not in (checkpoints.DONE, checkpoints.FAILED)]
    if not rows:
        return False
    now = utcnow()
    for r in rows:
        if r.expires_at is not None and r.expires_at > now:
            return False
        if r.heartbeat_at is not None and (now - r.heartbeat_at).total_seconds() < quiet_seconds:
            return False
    return True


@dataclass
class WorkerReport:
    worker: str
    segments: list[SegmentReport] = field(default_factory=list)
    taken_over: list[int] = field(default_factory=list)  # segments claimed from an expired lease
    lost: list[int] = field(default_factory=list)  # segments this worker lost to another
    stalled: list[int] = field(default_factory=list)  # segments it gave up: no progress within the stall limit
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(r.rows_read for r in self.segments)

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "segments": [r.segment for r in self.segments],
            "rows_read": self.rows_read,
            "rows_inserted": sum(r.rows_inserted for r in self.segments),
            "copy_seconds": round(sum(r.seconds for r in self.segments), 3),
            "taken_over": self.taken_over,
            "lost": self.lost,
            "stalled": self.stalled,
            "seconds": round(self.seconds, 3),
        }


def copy_claimed_segments(
    migration: Migration,
    worker_id: str,
    *,
    ttl: float = leases.DEFAULT_SEGMENT_TTL_SECONDS,
    throttle: Throttle | None = None,
    wait_for_others: bool = True,
    poll_seconds: float = 1.0,
    max_seconds: float | None = None,
    stall_seconds: float | None = None,
) -> WorkerReport:
    """Claim, copy and release segments until every segment is done (or failed), or ``max_seconds``.
    The rows/s cap is shared with every other worker (``backfill.budget``) unless ``throttle`` says otherwise.
    ``stall_seconds``: give a segment up after that long without a committed chunk (default: the
    spec's ``backfill.distributed.stall_seconds``, every worker reads it from the same spec).

    A data error (``CopyError``) marks the segment failed (``copy_segment``) and is raised: the
    other workers skip failed segments, a re-plan or an in-process run retries them.
    """
    engine = migration.store.engine
    leases.require_distributed_store(engine)
    throttle = throttle or make_throttle(migration, shared=True)  # the cluster's one rows/s budget

    def copy(lease: SegmentLease, progress: WorkProgress) -> SegmentReport:
        return copy_segment(
            migration.source,
            migration.target,
            engine,
            migration.mapping,
            migration.name,
            lease.segment,
            throttle,
            holder=worker_id,
            progress=progress,
        )

    done = work_claimed_segments(
        engine,
        leases.backfill_pool(migration.name),
        worker_id,
        copy,
        ttl=ttl,
        stall_seconds=stall_seconds or stall_limit(migration.spec.backfill.distributed),
        wait_for_others=wait_for_others,
        poll_seconds=poll_seconds,
        max_seconds=max_seconds,
    )
    return WorkerReport(worker_id, done.results, done.taken_over, done.lost, done.stalled, done.seconds)


def stall_limit(declared: DistributedSpec | None) -> float:
    """The spec's stall limit, or the default when the run asked for workers without declaring them."""
    return declared.stall_seconds if declared is not None else DEFAULT_STALL_SECONDS


@dataclass(frozen=True)
class DistributedProgress:
    rows_copied: int
    segments: int
    segments_done: int
    segments_failed: int
    held: dict[int, str]  # segment -> worker holding a live or expired lease

    @property
    def complete(self) -> bool:
        return self.segments > 0 and self.segments_done == self.segments

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_copied": self.rows_copied,
            "segments": self.segments,
            "segments_done": self.segments_done,
            "segments_failed": self.segments_failed,
            "held": {str(k): v for k, v in self.held.items()},
            "complete": self.complete,
        }


def distributed_progress(migration_name: str, engine: Any) -> DistributedProgress:
    rows = leases.read_leases(engine, migration_name)
    return DistributedProgress(
        rows_copied=sum(r.rows_copied for r in rows),
        segments=len(rows),
        segments_done=sum(1 for r in rows if r.state == checkpoints.DONE),
        segments_failed=sum(1 for r in rows if r.state == checkpoints.FAILED),
        held={r.segment: r.holder for r in rows if r.holder is not None},
    )


WORKER_MODULE = "shiftover.backfill.workers"


def worker_command(worker_id: str, ttl: float) -> list[str]:
    """A worker's command line: its id and lease time only (the job comes on stdin)."""
    return worker_processes.worker_command(WORKER_MODULE, worker_id, ttl)


@dataclass(frozen=True)
class WorkerJob:
    """What a worker elsewhere (an OS process, a Dask worker) needs to open the migration and run
    ``copy_claimed_segments``: the spec as data and the control store's URL (or a reference to it,
    resolved where the worker connects)."""

    spec: dict[str, Any]
    control_url: str

    @classmethod
    def of(cls, migration: Migration, control_url: str | None = None) -> WorkerJob:
        """``control_url``: as the run got it (a ``${NAME}`` stays a reference); else the open store's URL."""
        url = control_url or migration.store.engine.url.render_as_string(hide_password=False)
        return cls(json.loads(migration.spec.model_dump_json(by_alias=True)), url)

    def run(self, worker_id: str, ttl: float = leases.DEFAULT_SEGMENT_TTL_SECONDS) -> WorkerReport:
        """Open the migration and run the one worker loop; its engines' pools are closed after, so a
        long-lived host process (a Dask worker) keeps no idle connections to the three databases."""
        from shiftover.migration import open_migration
        from shiftover.spec import parse_spec

        spec = parse_spec(self.spec)
        migration = open_migration(spec, self.control_url, register=False, needed_by="a backfill worker")
        try:
            return copy_claimed_segments(migration, worker_id, ttl=ttl, poll_seconds=min(1.0, ttl / 4))
        finally:
            for engine in (migration.source, migration.target, migration.store.engine):
                engine.dispose()


def start_worker_processes(
    migration: Migration, workers: int, *, ttl: float = leases.DEFAULT_SEGMENT_TTL_SECONDS, prefix: str = "worker"
) -> list[subprocess.Popen[bytes]]:
    """Start ``workers`` OS processes of ``copy_claimed_segments`` over this migration's saved plan."""
    names = worker_names(prefix, workers)
    return worker_processes.start_processes(WORKER_MODULE, asdict(WorkerJob.of(migration)), names, ttl)


def worker_names(prefix: str, workers: int) -> list[str]:
    return [worker_name(prefix, i) for i in range(workers)]


MAX_PROCESS_ROUNDS = 3  # rounds of local worker processes: the first, and two to finish what stalled ones left


@dataclass(frozen=True)
class ProcessRounds:
    """What ``run_worker_processes`` saw: every process's exit, the ones it ended as stalled (worker
    id -> why), and how many rounds it started."""

    exits: list[WorkerExit]
    stalled: dict[str, str]
    rounds: int


def run_worker_processes(
    migration: Migration,
    workers: int,
    *,
    ttl: float = leases.DEFAULT_SEGMENT_TTL_SECONDS,
    tick: Callable[[], None] | None = None,
    grace: float = 5.0,
    max_rounds: int = MAX_PROCESS_ROUNDS,
) -> ProcessRounds:
    """Rounds of up to ``workers`` local worker processes until no segment is left unfinished. The
    parent ends a worker that stalls (``StallWatch``: its lease lapsed and it renewed none for a
    TTL, or it outlived the work; SIGTERM, then SIGKILL after ``grace``); its segments go back to the
    pool as its leases expire. A round that ends with segments left starts another under new worker
    ids, up to ``max_rounds``, unless every worker of it failed by itself (a new round fails alike)."""
    engine = migration.store.engine
    exits: list[WorkerExit] = []
    ended_stalled: dict[str, str] = {}
    rounds = 0
    while rounds < max_rounds:
        left = sum(1 for r in backfill_segments(engine, migration.name) if not r.finished)
        if not left:
            break
        rounds += 1
        names = worker_names("worker" if rounds == 1 else f"worker-r{rounds}", min(workers, left))
        job = asdict(WorkerJob.of(migration))
        procs = worker_processes.start_processes(WORKER_MODULE, job, names, ttl)
        watch = StallWatch(lambda: backfill_segments(engine, migration.name), names, ttl=ttl)
        ended = wait_for_workers(procs, tick=tick, stalled=watch, grace=grace)
        exits += ended
        ended_stalled.update({name: e.stalled for name, e in zip(names, ended, strict=True) if e.stalled})
        failed = [e for e in ended if e.returncode > 0 and e.stalled is None]
        if failed and len(failed) == len(ended):
            break
    return ProcessRounds(exits, ended_stalled, rounds)


FINISHED = (checkpoints.DONE, checkpoints.FAILED)  # states no worker claims again


def backfill_segments(engine: Any, migration: str) -> list[SegmentView]:
    """The backfill plan's segments and leases, as ``StallWatch`` reads them."""
    return [
        SegmentView(
            r.segment, r.state in (checkpoints.DONE, checkpoints.FAILED), r.holder, r.expires_at, r.heartbeat_at
        )
        for r in leases.read_leases(engine, migration)
    ]


def main(argv: list[str]) -> int:
    """``python -m shiftover.backfill.workers WORKER_ID [TTL]`` with ``{"spec": ..., "control_url": ...}``
    as one JSON line on stdin: one worker; prints its report as one JSON line."""
    job = WorkerJob(**json.loads(sys.stdin.readline()))
    ttl = float(argv[1]) if len(argv) > 1 else leases.DEFAULT_SEGMENT_TTL_SECONDS
    report = job.run(argv[0], ttl)
    print(json.dumps(report.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
