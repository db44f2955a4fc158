"""The validation diff spread over worker processes (``validation.distributed``).

The parent plans the key-range segments as ``diff_tables`` does and saves them (``so_diff_segments``,
one row per segment of the run); workers claim segments by lease with a heartbeat (the backfill's
machinery: ``control.segment_leases``), screen and narrow each as the in-process diff does, and
record the segment's differences with its state in one transaction fenced by the lease, so a
segment is recorded once even when a worker that lost its lease finishes it late. The parent
waits, ends a worker that stalls (``control.worker_processes.StallWatch``), starts new workers
while unfinished segments are left that no live worker holds (every worker gone), and builds the
same ``DiffReport`` from the control store.

Run a worker by hand: ``python -m shiftover.diff.distributed WORKER_ID [TTL]`` with
``{"spec": ..., "control_url": ..., "diff": {...}}`` (``DiffJob.as_dict``) as one JSON line on stdin.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema, worker_processes
from shiftover.control.segment_leases import (
    DEFAULT_STALL_SECONDS,
    SegmentLease,
    SegmentPool,
    require_distributed_store,
    work_claimed_segments,
)
from shiftover.control.store import utcnow
from shiftover.control.work_progress import WorkProgress, pooled_statements
from shiftover.diff.bisect import Narrowing
from shiftover.diff.checksum import key_bounds
from shiftover.diff.failures import DiffProgress, load_differences, record_differences
from shiftover.diff.report import DiffReport
from shiftover.diff.segments import KeyRange
from shiftover.diff.tables import DiffPlan, _narrowing, _segment, _segments, _sorted, _unique, plan_diff
from shiftover.errors import DiffError, SegmentLeaseLostError, SpecError
from shiftover.migration import Migration
from shiftover.spec import DiffDistributedSpec

WORKER_MODULE = "shiftover.diff.distributed"
log = logging.getLogger(__name__)
PENDING, FINISHED = "pending", ("equal", "differ")
MAX_ROUNDS = 5  # rounds of worker processes a parent starts before it gives up
_SEG = schema.diff_segments


def diff_pool(migration: str, run_id: str) -> SegmentPool:
    """One diff run's segments: finished once ``equal`` or ``differ``."""
    return SegmentPool(_SEG, (("migration", migration), ("run_id", run_id)), FINISHED)


@dataclass(frozen=True)
class DiffJob:
    """What every worker of one run needs beyond the spec: the run, the integer key's span over both
    sides (the parent's, so every worker cuts buckets alike) and the ``since`` limit."""

    run_id: str
    integer_span: tuple[int, int] | None = None
    since: datetime | None = None
    since_column: str = "updated_at"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "integer_span": list(self.integer_span) if self.integer_span else None,
            "since": self.since.isoformat() if self.since else None,
            "since_column": self.since_column,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffJob:
        span = data.get("integer_span")
        since = data.get("since")
        return cls(
            data["run_id"],
            (int(span[0]), int(span[1])) if span else None,
            datetime.fromisoformat(since) if since else None,
            data.get("since_column", "updated_at"),
        )


# -- the worker -----------------------------------------------------------------------------


@dataclass
class DiffWorkerReport:
    worker: str
    segments: list[int] = field(default_factory=list)
    differences: int = 0
    taken_over: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    stalled: list[int] = field(default_factory=list)  # given up: no progress within the stall limit
    seconds: float = 0.0  # in the claim loop
    diff_seconds: float = 0.0  # screening and narrowing segments
    record_seconds: float = 0.0  # recording segments' results in the control store

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "segments": self.segments,
            "differences": self.differences,
            "taken_over": self.taken_over,
            "lost": self.lost,
            "stalled": self.stalled,
            "seconds": round(self.seconds, 3),
            "diff_seconds": round(self.diff_seconds, 3),
            "record_seconds": round(self.record_seconds, 3),
        }


def diff_claimed_segments(
    migration: Migration,
    job: DiffJob,
    worker_id: str,
    *,
    ttl: float = 30.0,
    wait_for_others: bool = True,
    poll_seconds: float = 1.0,
    max_seconds: float | None = None,
    stall_seconds: float | None = None,
) -> DiffWorkerReport:
    """One worker: claim segments of ``job``'s run, diff each, record its result; until none is left,
    or the run's differences passed ``max_differences`` (the parent reports it truncated).
    ``stall_seconds``: give a segment up after that long with no screening or narrowing step
    returned (default: the spec's ``validation.distributed.stall_seconds``)."""
    engine, options = migration.store.engine, migration.spec.validation
    require_distributed_store(engine, what="diff")
    m = migration
    plan = plan_diff(
        m.source, m.target, m.mapping, options, since=job.since, since_column=job.since_column, check_key_values=False
    )
    ranges = [rng for rng, _ in DiffProgress(engine, m.name, job.run_id).load_segments()]
    report = DiffWorkerReport(worker_id)
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="so-diff-side") as side_pool,
        pooled_statements(m.source, m.target) as cancel_queries,
    ):

        def diff_one(lease: SegmentLease, progress: WorkProgress) -> int:
            n = Narrowing(
                plan.source,
                plan.target,
                plan.key_rules,
                options.row_threshold,
                side_pool,
                integer_span=job.integer_span,
                limit=options.max_differences,
            )
            started = time.perf_counter()
            found = screen_leased_segment(plan, n, ranges[lease.segment], lease, progress, cancel_queries)
            recording = time.perf_counter()
            finish_leased_segment(engine, lease, job.run_id, found, n)
            report.diff_seconds += recording - started
            report.record_seconds += time.perf_counter() - recording
            report.segments.append(lease.segment)
            return len(found)

        done = work_claimed_segments(
            engine,
            diff_pool(m.name, job.run_id),
            worker_id,
            diff_one,
            ttl=ttl,
            stall_seconds=stall_seconds
            or (options.distributed.stall_seconds if options.distributed else DEFAULT_STALL_SECONDS),
            wait_for_others=wait_for_others,
            poll_seconds=poll_seconds,
            max_seconds=max_seconds,
            stop=lambda: recorded_count(engine, m.name, job.run_id) > options.max_differences,
        )
    report.differences = sum(done.results)
    report.taken_over, report.lost, report.stalled = done.taken_over, done.lost, done.stalled
    report.seconds = done.seconds
    return report


def screen_leased_segment(
    plan: DiffPlan,
    n: Narrowing,
    rng: KeyRange,
    lease: SegmentLease,
    progress: WorkProgress,
    cancel_queries: Callable[[], None],
) -> list[Any]:
    """``_segment`` reporting each returned step as progress; once the heartbeat declared the work
    stalled (its queries cancelled), it ends with ``SegmentLeaseLostError`` at its next step or error."""

    def gave_up() -> SegmentLeaseLostError:
        return SegmentLeaseLostError(
            lease.migration, f"worker {lease.holder} made no progress on segment {lease.segment} and gave it up"
        )

    def moved() -> None:
        if progress.stalled:  # the new holder diffs the segment
            raise gave_up()
        progress.advance()

    n.progress = moved
    try:
        with progress.on_stall(cancel_queries):
            return _segment(plan, n, rng)
    except Exception as exc:
        if progress.stalled and not isinstance(exc, SegmentLeaseLostError):
            raise gave_up() from exc
        raise


def finish_leased_segment(engine: Engine, lease: SegmentLease, run_id: str, found: list[Any], n: Narrowing) -> None:
    """The segment's differences and totals, recorded only while this worker holds its lease and the
    segment is still pending (a worker that lost it records nothing: ``SegmentLeaseLostError``)."""
    with engine.begin() as conn:
        won = conn.execute(
            _SEG.update()
            .where(*lease.pool.row(lease.segment), _SEG.c.state == PENDING, _SEG.c.lease_holder == lease.holder)
            .values(
                state="differ" if found else "equal",
                differences=len(found),
                source_rows=n.screened[0],
                target_rows=n.screened[1],
                narrowed=n.differing,
                done_by=lease.holder,
                updated_at=utcnow(),
            )
        ).rowcount
        if won != 1:
            raise SegmentLeaseLostError(
                lease.migration, f"segment {lease.segment} of diff run {run_id} is no longer {lease.holder}'s"
            )
        record_differences(conn, lease.migration, run_id, found)


def recorded_count(engine: Engine, migration: str, run_id: str) -> int:
    query = sa.select(sa.func.coalesce(sa.func.sum(_SEG.c.differences), 0)).where(
        _SEG.c.migration == migration, _SEG.c.run_id == run_id
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# -- the parent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRow:
    segment: int
    state: str
    holder: str | None
    expires_at: datetime | None
    heartbeat_at: datetime | None
    done_by: str | None
    differences: int
    source_rows: int
    target_rows: int
    narrowed: int


def read_segments(engine: Engine, migration: str, run_id: str) -> list[SegmentRow]:
    c = _SEG.c
    query = sa.select(_SEG).where(c.migration == migration, c.run_id == run_id).order_by(c.segment)
    with engine.connect() as conn:
        return [
            SegmentRow(
                int(r.segment),
                r.state,
                r.lease_holder,
                r.lease_expires_at,
                r.heartbeat_at,
                r.done_by,
                int(r.differences or 0),
                int(r.source_rows or 0),
                int(r.target_rows or 0),
                int(r.narrowed or 0),
            )
            for r in conn.execute(query)
        ]


@dataclass
class PlannedDiff:
    """A distributed diff run's plan, saved in the control store, and what its report needs."""

    plan: DiffPlan
    narrowing: Narrowing
    job: DiffJob
    segments: int
    resumed: int  # segments already finished when this parent looked (a resumed run)


def plan_distributed_diff(
    migration: Migration,
    settings: DiffDistributedSpec,
    run_id: str,
    *,
    since: datetime | None = None,
    since_column: str = "updated_at",
    field: str | None = "validation.distributed",
) -> PlannedDiff:
    """Refuse a SQLite control store (naming ``field``), check the pair, plan and save the run's
    segments (at least ``workers * segments_per_worker``), or load the saved ones of ``run_id``."""
    engine, m, options = migration.store.engine, migration, migration.spec.validation
    require_distributed_store(engine, field, what="diff")
    parts = max(options.segments, settings.workers * settings.segments_per_worker)
    wide = options.model_copy(update={"segments": parts})
    plan = plan_diff(m.source, m.target, m.mapping, wide, since=since, since_column=since_column)
    progress = DiffProgress(engine, m.name, run_id)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="so-diff-side") as side_pool:
        saved = progress.load_segments()
        n = _narrowing(plan, side_pool, count=bool(saved))
        segments = saved or _segments(plan, n, progress)
    resumed = sum(1 for _, done in segments if done)
    return PlannedDiff(plan, n, DiffJob(run_id, n.integer_span, since, since_column), len(segments), resumed)


@dataclass(frozen=True)
class DiffRunProgress:
    """Where a distributed diff run stands, read from its segments (the live progress artifact)."""

    run_id: str
    segments: int
    done: int
    pending: int
    differing: int  # segments done with differences
    differences: int
    source_rows: int  # screened so far
    target_rows: int
    holders: dict[str, tuple[int, int]]  # holder -> (segments done, segments held now)

    @classmethod
    def of(cls, run_id: str, rows: list[SegmentRow]) -> DiffRunProgress:
        holders: dict[str, tuple[int, int]] = {}
        for r in rows:
            who, held = (r.done_by, 0) if r.state != PENDING else (r.holder, 1)
            if who is not None:
                by, now = holders.get(who, (0, 0))
                holders[who] = (by + 1 - held, now + held)
        done = [r for r in rows if r.state != PENDING]
        return cls(
            run_id,
            len(rows),
            len(done),
            len(rows) - len(done),
            sum(1 for r in done if r.state == "differ"),
            sum(r.differences for r in done),
            sum(r.source_rows for r in done),
            sum(r.target_rows for r in done),
            holders,
        )

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.segments if self.segments else 100.0

    def describe(self) -> str:
        """'5/8 segments done, 3 pending, 1 differing (4 differences); rows screened: source 500,000,
        target 499,998; by holder: w1 3 done, w2 2 done 1 held'."""
        holders = sorted(self.holders.items())
        by_holder = ", ".join(f"{who} {done} done" + (f" {held} held" if held else "") for who, (done, held) in holders)
        return (
            f"{self.done}/{self.segments} segments done, {self.pending} pending, {self.differing} differing "
            f"({self.differences} differences); rows screened: source {self.source_rows:,}, "
            f"target {self.target_rows:,}; by holder: {by_holder or 'none yet'}"
        )


@dataclass(frozen=True)
class DiffRun:
    """A planned run handed to a ``WorkerRunner``; ``tick``: to call about every second while it waits."""

    migration: Migration
    settings: DiffDistributedSpec
    job: DiffJob
    tick: Callable[[], None] | None = None


# Runs a planned run's workers to the end (no segment pending): local processes (``run_workers``),
# loops on a Dask cluster (``DaskDiffLoops``, mode ``dask``), or the validate flow's Prefect child
# runs (mode ``deployment``).
WorkerRunner = Callable[[DiffRun], object]


def diff_distributed(
    migration: Migration,
    settings: DiffDistributedSpec,
    run_id: str,
    *,
    since: datetime | None = None,
    since_column: str = "updated_at",
    prefix: str = "diff",
    field: str | None = "validation.distributed",
    runner: WorkerRunner | None = None,
    tick: Callable[[DiffRunProgress], None] | None = None,
) -> DiffReport:
    """``diff_tables`` over ``settings.workers`` workers; the same report. ``runner`` starts and
    waits for them (default: local worker processes, or loops on the Dask cluster in mode ``dask``;
    mode ``deployment`` needs one). ``tick`` gets the run's progress about every second, and once
    at the end.

    Called again with the run id of a parent that died, it resumes: finished segments stay done.
    """
    started = time.perf_counter()
    engine = migration.store.engine
    if runner is None:
        runner = default_runner(migration, settings, field, prefix)  # refuses what it cannot run, first
    planned = plan_distributed_diff(migration, settings, run_id, since=since, since_column=since_column, field=field)

    def watch() -> None:
        if tick is not None:
            tick(DiffRunProgress.of(run_id, read_segments(engine, migration.name, run_id)))

    runner(DiffRun(migration, settings, planned.job, watch))
    watch()
    report = aggregate_report(planned.plan, engine, migration.name, run_id, planned.narrowing)
    report.segments_resumed = planned.resumed
    report.seconds = time.perf_counter() - started
    return report


def default_runner(migration: Migration, settings: DiffDistributedSpec, field: str | None, prefix: str) -> WorkerRunner:
    """The runner of a diff called without one: local processes, or loops on the Dask cluster (whose
    scheduler must answer now, before anything is written). Mode ``deployment`` is refused."""
    section = field or "validation.distributed"
    if settings.mode == "deployment":
        raise SpecError(
            f"{section}.mode",
            "mode deployment starts Prefect child runs, which only the validate flow (or migrate) can do: "
            "run the checksum gate from that flow, or use mode processes",
        )
    if settings.mode == "dask":
        from shiftover.diff.dask_workers import DaskDiffLoops  # it imports this module

        require_distributed_store(migration.store.engine, field, what="diff")
        runner = DaskDiffLoops()
        runner.check(settings)
        return runner
    return lambda run: run_workers(run.migration, run.settings, run.job, prefix=prefix, tick=run.tick)


def run_workers(
    migration: Migration,
    settings: DiffDistributedSpec,
    job: DiffJob,
    *,
    prefix: str = "diff",
    tick: Callable[[], None] | None = None,
) -> list[worker_processes.WorkerExit]:
    """Rounds of ``settings.workers`` processes until no segment is pending (or the run's differences
    passed ``max_differences``); a round whose workers all ended with segments left starts another.
    A worker that stalls (``StallWatch``: its lease lapsed and it renewed none for a TTL, or it
    outlived the work) is ended, logged, and its exit says why (``WorkerExit.stalled``)."""
    engine, options = migration.store.engine, migration.spec.validation
    ended: list[worker_processes.WorkerExit] = []

    def segments() -> list[worker_processes.SegmentView]:
        return [
            worker_processes.SegmentView(r.segment, r.state != PENDING, r.holder, r.expires_at, r.heartbeat_at)
            for r in read_segments(engine, migration.name, job.run_id)
        ]

    for round_ in range(MAX_ROUNDS):
        if not any(r.state == PENDING for r in read_segments(engine, migration.name, job.run_id)):
            return ended
        ttl, names = settings.lease_ttl_seconds, diff_worker_names(f"{prefix}{round_}", settings.workers)
        procs = start_diff_workers(migration, settings.workers, job, ttl=ttl, prefix=f"{prefix}{round_}")
        watch = worker_processes.StallWatch(segments, names, ttl=ttl)
        exits = worker_processes.wait_for_workers(procs, tick=tick, stalled=watch)
        for name, e in zip(names, exits, strict=True):
            if e.stalled is not None:
                log.warning("diff run %s: worker %s stalled and was ended: %s", job.run_id, name, e.stalled)
        ended += exits
        left = [r for r in read_segments(engine, migration.name, job.run_id) if r.state == PENDING]
        if not left or recorded_count(engine, migration.name, job.run_id) > options.max_differences:
            return ended
        failed = [e for e in exits if e.returncode > 0]  # not killed by a signal: ended on an error
        if failed and len(failed) == len(exits):  # each one failed by itself: a new round fails alike
            raise DiffError(f"every diff worker failed; the last said: {failed[-1].stderr.strip()[-1500:]}")
    raise DiffError(f"diff run {job.run_id}: segments still pending after {MAX_ROUNDS} rounds of workers")


def start_diff_workers(
    migration: Migration, workers: int, job: DiffJob, *, ttl: float, prefix: str = "diff"
) -> list[subprocess.Popen[bytes]]:
    payload = {
        "spec": json.loads(migration.spec.model_dump_json(by_alias=True)),
        "control_url": migration.store.engine.url.render_as_string(hide_password=False),
        "diff": job.as_dict(),
    }
    return worker_processes.start_processes(WORKER_MODULE, payload, diff_worker_names(prefix, workers), ttl)


def diff_worker_names(prefix: str, workers: int) -> list[str]:
    return [worker_processes.worker_name(prefix, i) for i in range(workers)]


def aggregate_report(plan: DiffPlan, engine: Engine, migration: str, run_id: str, n: Narrowing) -> DiffReport:
    """The run's ``DiffReport`` from the control store, as ``diff_tables`` builds it from its threads."""
    rows = read_segments(engine, migration, run_id)
    limit = plan.options.max_differences
    report = DiffReport(table=plan.mapping.target_table, run_id=run_id, segments=len(rows))
    report.differences = _unique(plan, _sorted(plan, load_differences(engine, migration, run_id)))
    report.truncated = len(report.differences) > limit or any(r.state == PENDING for r in rows)
    if n.counted:
        report.source_rows, report.target_rows = n.source_rows, n.target_rows
    elif report.truncated:  # not every segment was screened
        report.source_rows, report.target_rows = (key_bounds(side)[2] or 0 for side in (plan.source, plan.target))
    else:
        report.source_rows = sum(r.source_rows for r in rows)
        report.target_rows = sum(r.target_rows for r in rows)
    report.segments_differing = sum(r.narrowed for r in rows)
    del report.differences[limit:]
    return report


def main(argv: list[str]) -> int:
    """``python -m shiftover.diff.distributed WORKER_ID [TTL]``: one worker; prints its report as one JSON line."""
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec

    payload = json.loads(sys.stdin.readline())
    ttl = float(argv[1]) if len(argv) > 1 else 30.0
    migration = open_migration(
        parse_spec(payload["spec"]), payload["control_url"], register=False, needed_by="a diff worker"
    )
    job = DiffJob.from_dict(payload["diff"])
    report = diff_claimed_segments(migration, job, argv[0], ttl=ttl, poll_seconds=min(1.0, ttl / 4))
    print(json.dumps(report.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
