"""Stage 2, backfill: copy the history of the old table into the new one, resumably, while
dual-writes run. Undo: nothing (the old table is untouched).

Plans segments once (saved in the control store), runs one task per unfinished segment,
``concurrency`` at a time, and shows progress as it goes. With a time budget (the nightly
window of the scheduled deployment) it stops starting chunks at the budget's end and the stage
stays incomplete; the next run resumes from the checkpoints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from shiftover.backfill import (
    BackfillStatus,
    backfill_status,
    clear_plan,
    load_plan,
    make_throttle,
    prepare_backfill,
)
from shiftover.backfill.budget import ensure_budget
from shiftover.backfill.copy import SegmentReport
from shiftover.backfill.dask_workers import connect_scheduler, run_dask_backfill
from shiftover.backfill.keyset import estimate_rows
from shiftover.backfill.run import BackfillSummary, summarise
from shiftover.backfill.throttle import set_throttle
from shiftover.backfill.workers import (
    DistributedSettings,
    distributed_progress,
    distributed_settings,
    require_distributed,
    run_worker_processes,
    stalled,
)
from shiftover.control.store import DEFAULT_URL
from shiftover.flows.child_runs import all_gone, end_child_runs, launch_child_runs
from shiftover.flows.context import RunContext, RunOptions
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.migration import Migration
from shiftover.phases import Phase
from shiftover.plan import BackfillStage
from shiftover.story import artifact_key
from shiftover.tasks.backfill import copy_segment_task

MAX_CONCURRENCY = 16


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY))  # type: ignore[arg-type]
def backfill(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    time_budget_seconds: float | None = None,
    concurrency: int | None = None,
    distributed: int | None = None,
) -> dict[str, Any]:
    """Copy every row absent from the new table; stops starting chunks when the budget runs out
    (the next run resumes from the checkpoints). ``distributed``: plan once, then copy with that
    many worker processes claiming segments by lease (PostgreSQL or MariaDB control store); the spec's
    ``backfill.distributed`` may name local processes, child runs of a deployment or a Dask cluster."""
    options = RunOptions(time_budget_seconds=time_budget_seconds, concurrency=concurrency, distributed=distributed)
    return run_plan(spec_path, control_url, options, flows={"backfill"})


def run_backfill(ctx: RunContext, stage: BackfillStage) -> Outcome:
    """Plan segments once (saved), copy the unfinished ones ``concurrency`` at a time, or with
    distributed workers (``backfill.distributed`` or ``distributed=N``), report progress."""
    started = time.monotonic()
    budget = ctx.options.time_budget_seconds
    deadline = time.time() + budget if budget else None
    migration = ctx.migration
    dist = distributed_settings(migration.spec.backfill, ctx.options.distributed)
    if dist is not None:  # refused before the phase moves
        if budget:
            raise ValueError("a distributed backfill takes no time budget (workers run to the end)")
        require_distributed(migration, dist)
        if dist.mode == "deployment" and not (ctx.options.spec_path and ctx.options.control_url):
            raise ValueError("child runs need the run's spec path and control URL (set by run_plan)")
        if dist.mode == "dask":  # a missing package, bad address or silent scheduler: refused here
            connect_scheduler(dist.scheduler or "").close()
    if ctx.state().phase is Phase.DUAL_WRITING and _plan_finished(migration):
        clear_plan(migration.store.engine, migration.name)  # a restart after rollback: copy rows added since
    ctx.advance(Phase.BACKFILLING, "backfill started")
    concurrency = ctx.options.concurrency or migration.spec.backfill.concurrency
    workers = dist.workers if dist else min(concurrency, MAX_CONCURRENCY)
    plan, planned_total = prepare_backfill(migration, workers, segments=dist.segments if dist else None)
    total = _source_rows(migration) if planned_total is None else planned_total  # estimated once
    if dist is not None:
        ensure_budget(migration.store.engine, migration.name)
        if dist.mode == "deployment":
            summary = _run_child_runs(ctx, dist, total, started, len(plan))
        elif dist.mode == "dask":
            summary = _run_dask(ctx, dist, total, started, len(plan))
        else:
            summary = _run_distributed(migration, dist, total, started, len(plan))
    else:
        reports = _run_segments(migration, [s.segment.index for s in plan if not s.done], workers, deadline, total)
        summary = summarise(reports, time.monotonic() - started, len(plan))
    status = backfill_status(migration.store.engine, migration.name)
    summary.complete = status.complete
    publish_table(status, summary.as_dict(), total)
    get_run_logger().info("backfill of %s: %s", migration.name, summary.as_dict())
    return Outcome(status.complete, f"{status.rows_copied} rows copied", summary.as_dict())


def _plan_finished(migration: Migration) -> bool:
    plan = load_plan(migration.store.engine, migration.name)
    return bool(plan) and all(s.done for s in plan)


def _run_segments(
    migration: Migration, todo: list[int], workers: int, deadline: float | None, total: int
) -> list[SegmentReport]:
    """Keep ``workers`` segment tasks in flight; refresh the progress artifact while they run."""
    throttle = make_throttle(migration, overrides=prefect_variable_reader(throttle_variable_name(migration.name)))
    progress = create_progress_artifact(
        0.0, key=artifact_key("backfill", migration.name, "progress"), description=f"backfill of {migration.name}"
    )
    pending = list(todo)
    running: list[PrefectFuture[SegmentReport]] = []
    finished: list[PrefectFuture[SegmentReport]] = []
    began = time.monotonic()
    while pending or running:
        while pending and len(running) < workers:
            running.append(copy_segment_task.submit(migration, pending.pop(0), throttle, deadline))
        done = wait(running, timeout=1.0).done
        running = [f for f in running if f not in done]
        finished.extend(done)
        _update_progress(progress, migration, total, time.monotonic() - began)
    return [f.result() for f in finished]  # raises the first CopyError


def _run_distributed(
    migration: Migration, dist: DistributedSettings, total: int, started: float, segments: int
) -> BackfillSummary:
    """Rounds of ``dist.workers`` local worker processes over the saved plan (``run_worker_processes``),
    refreshing the progress artifact from the checkpoints meanwhile; a worker that dies leaves its
    segments to the others, one that stalls is ended (and named in the log and the summary) and a
    new round finishes what it left."""
    progress = create_progress_artifact(
        0.0, key=artifact_key("backfill", migration.name, "progress"), description=f"backfill of {migration.name}"
    )
    engine = migration.store.engine
    before = distributed_progress(migration.name, engine).rows_copied
    began = time.monotonic()

    mirror = VariableMirror(migration)

    def tick() -> None:
        mirror()
        _update_progress(progress, migration, total, time.monotonic() - began)

    ran = run_worker_processes(migration, dist.workers, ttl=dist.lease_ttl_seconds, tick=tick)
    tick()
    logger = get_run_logger()
    for worker, why in ran.stalled.items():
        logger.warning("backfill of %s: worker %s stalled and was ended: %s", migration.name, worker, why)
    for ended in ran.exits:
        if ended.report is None and ended.stalled is None:
            logger.warning("backfill worker exited %s: %s", ended.returncode, ended.stderr[-2000:])
    reports = [e.report for e in ran.exits if e.report is not None]
    logger.info("distributed backfill workers (%d round(s)): %s", ran.rounds, reports)
    after = distributed_progress(migration.name, engine)
    return BackfillSummary(
        # from the checkpoints: an ended worker's committed chunks count, each chunk once
        rows_copied=after.rows_copied - before,
        rows_inserted=sum(r["rows_inserted"] for r in reports),  # the workers that reported
        seconds=time.monotonic() - started,
        segments=segments,
        complete=after.complete,
        stalled_workers=ran.stalled,
    )


def _run_dask(ctx: RunContext, dist: DistributedSettings, total: int, started: float, segments: int) -> BackfillSummary:
    """One worker loop per Dask worker of the spec's scheduler (``run_dask_backfill``), this run
    refreshing the progress artifact and mirroring the throttle variable from the control store."""
    migration = ctx.migration
    logger = get_run_logger()
    progress = create_progress_artifact(
        0.0, key=artifact_key("backfill", migration.name, "progress"), description=f"backfill of {migration.name}"
    )
    mirror, began = VariableMirror(migration), time.monotonic()

    def tick() -> None:
        mirror()
        _update_progress(progress, migration, total, time.monotonic() - began)

    outcome = run_dask_backfill(
        migration,
        dist,
        control_url=ctx.options.control_url,  # as the run got it: a ${NAME} stays a reference
        tick=tick,
        log=lambda line: logger.info("backfill of %s: %s", migration.name, line),
    )
    for error in outcome.errors:
        logger.warning("backfill loop on Dask failed: %s", error)
    if outcome.unfinished_loops:
        logger.warning(
            "backfill of %s: %d Dask loops had not ended (released)", migration.name, outcome.unfinished_loops
        )
    if sum(int(r["rows_read"]) for r in outcome.reports) < outcome.rows_copied:  # a loop died unreported
        logger.warning(
            "backfill of %s: rows_inserted counts only the loops that returned; rows_copied (%d) is complete",
            migration.name,
            outcome.rows_copied,
        )
    logger.info("distributed backfill loops on Dask: %s", outcome.reports)
    return BackfillSummary(
        rows_copied=outcome.rows_copied,
        rows_inserted=outcome.rows_inserted_by_returned_loops,
        seconds=time.monotonic() - started,
        segments=segments,
        complete=outcome.progress is not None and outcome.progress.complete,
    )


MAX_ROUNDS = 3  # child-run launches in all: the first, and two to resume what every worker left


def _run_child_runs(
    ctx: RunContext, dist: DistributedSettings, total: int, started: float, segments: int
) -> BackfillSummary:
    """One Prefect run of the ``dist.deployment`` per worker (subflows of this run, on that
    deployment's work pool), each claiming segments by lease until none is left.

    This run waits on the control store, not on the children's states: a worker whose machine
    died leaves its run Running forever, while its leases expire and the survivors finish its
    segments. Once every segment is done, children still not ended after a grace are cancelled.
    When unfinished segments are left that no worker holds or renews (every worker gone), it
    starts another round of child runs, up to ``MAX_ROUNDS`` in all."""
    migration = ctx.migration
    engine = migration.store.engine
    logger = get_run_logger()
    progress = create_progress_artifact(
        0.0, key=artifact_key("backfill", migration.name, "progress"), description=f"backfill of {migration.name}"
    )
    before = distributed_progress(migration.name, engine).rows_copied
    parameters: dict[str, Any] = {
        # as this run got them: a ${NAME} reference stays one, resolved by each child's environment
        "spec_path": str(Path(str(ctx.options.spec_path)).resolve()),
        "control_url": ctx.options.control_url,
        "lease_ttl_seconds": dist.lease_ttl_seconds,
    }
    children = _launch_children(dist, parameters, dist.workers, 1)
    logger.info("backfill of %s: started %d child runs of %s", migration.name, len(children), dist.deployment)
    rounds, launched_at, began = 1, time.monotonic(), time.monotonic()
    grace = max(4 * dist.lease_ttl_seconds, 10.0)
    mirror = VariableMirror(migration)
    while True:
        mirror()
        _update_progress(progress, migration, total, time.monotonic() - began)
        state = distributed_progress(migration.name, engine)
        if state.complete or state.segments_done + state.segments_failed == state.segments:
            break
        quiet = stalled(migration.name, engine, quiet_seconds=2 * dist.lease_ttl_seconds)
        gone = all_gone(children, launched_at, grace, quiet)
        if gone:
            if rounds >= MAX_ROUNDS:
                logger.warning("backfill of %s: every worker is gone after %d rounds; stopping", migration.name, rounds)
                break
            rounds += 1
            left = state.segments - state.segments_done - state.segments_failed
            children += _launch_children(dist, parameters, min(dist.workers, left), rounds)
            launched_at = time.monotonic()
            logger.info("backfill of %s: round %d, %d segments left", migration.name, rounds, left)
        time.sleep(1.0)
    _update_progress(progress, migration, total, time.monotonic() - began)
    _end_children(children, grace=10.0)
    after = distributed_progress(migration.name, engine)
    return BackfillSummary(
        rows_copied=after.rows_copied - before,
        # not counted here: each child's own insert count is in its run's log and return value
        rows_inserted=after.rows_copied - before,
        seconds=time.monotonic() - started,
        segments=segments,
        complete=after.complete,
    )


def _launch_children(dist: DistributedSettings, parameters: dict[str, Any], n: int, round_: int) -> list[UUID]:
    return launch_child_runs(dist.deployment, parameters, n, "backfill-worker", round_)


def _end_children(children: list[UUID], *, grace: float) -> None:
    end_child_runs(children, grace=grace, who="backfill")


class VariableMirror:
    """The UI's throttle variable, copied to the throttle flag in the control store when it changes,
    so distributed workers (which read the flag, not Prefect) follow a pause or retune made in
    the UI. ``shiftover throttle`` writes the flag itself; a later change of the variable wins."""

    def __init__(self, migration: Migration) -> None:
        self.migration = migration
        self.read = prefect_variable_reader(throttle_variable_name(migration.name))
        self.last: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any] | None:
        value = self.read()
        if not value or value == self.last:
            return None
        self.last = value
        try:
            return set_throttle(
                self.migration.store.engine,
                self.migration.name,
                paused=value.get("paused"),
                max_rows_per_second=value.get("max_rows_per_second"),
                chunk_rows=value.get("chunk_rows"),
                nice_ratio=value.get("nice_ratio"),
                actor="prefect-variable",
            )
        except (ValueError, TypeError) as exc:
            get_run_logger().warning("throttle variable of %s ignored: %s", self.migration.name, exc)
            return None


def throttle_variable_name(migration: str) -> str:
    """The Prefect variable the UI can set to pause or retune a running backfill, e.g.
    ``{"paused": true}`` or ``{"max_rows_per_second": 5000, "chunk_rows": 20000}``."""
    return "shiftover_backfill_throttle_" + re.sub(r"[^a-z0-9_]+", "_", migration.lower())


def prefect_variable_reader(name: str) -> Callable[[], dict[str, Any] | None]:
    """Read a JSON-object Prefect variable; a missing, unreadable or non-object value means no override."""
    from prefect.variables import Variable

    def read() -> dict[str, Any] | None:
        try:
            value = Variable.get(name)
        except Exception:
            return None
        return value if isinstance(value, dict) else None

    return read


def _source_rows(migration: Migration) -> int:
    return estimate_rows(migration.source, migration.mapping.source_table_obj(migration.source))


def _update_progress(artifact_id: Any, migration: Migration, total: int, seconds: float) -> None:
    status = backfill_status(migration.store.engine, migration.name)
    percent = 100.0 if status.complete else min(99.9, 100.0 * status.rows_copied / max(total, 1))
    update_progress_artifact(artifact_id, percent, description=progress_line(status, total, seconds))


def progress_line(status: BackfillStatus, total: int, seconds: float) -> str:
    """'1,200,000 / 2,000,000 rows, 180,000 rows/s, ETA 4 s, 3/8 segments done'."""
    rate = status.rows_copied / seconds if seconds > 0 else 0.0
    eta = (max(total - status.rows_copied, 0) / rate) if rate > 0 else float("nan")
    return (
        f"{status.rows_copied:,} / {total:,} rows, {rate:,.0f} rows/s, ETA {eta:,.0f} s, "
        f"{status.segments_done}/{status.segments} segments done"
    )


def publish_table(status: BackfillStatus, summary: dict[str, Any], total: int) -> None:
    """One table artifact per run: per-segment state, with totals, rows/s and ETA in its description."""
    rows = [{k: v for k, v in seg.items() if k != "updated_at"} for seg in status.per_segment]
    rate = summary["rows_per_second"]
    left = 0 if status.complete else max(total - status.rows_copied, 0)
    eta = "done" if status.complete else (f"{left / rate:,.0f} s" if rate else "unknown")
    description = (
        f"backfill of {status.migration}: {status.rows_copied:,} of ~{total:,} rows copied "
        f"({summary['rows_copied']:,} this run, {rate:,.0f} rows/s), ETA {eta}, "
        f"{status.segments_done}/{status.segments} segments done, state {summary['state']}"
    )
    create_table_artifact(rows, key=artifact_key("backfill", status.migration, "segments"), description=description)
