"""Stage 1, dual-write: the writes flag to dual-write (old, then new), after creating the new
table when the spec asks; then a wait of two flag TTLs, so every application instance writes
both stores before the backfill starts and no write is missed. Undo: the writes flag back to
old-only (the rollback flow). Its precheck is the rehearsal: the first step of every run that
finds the migration still ``planned``, before anything is written or any flag flips."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from shiftover.control.store import DEFAULT_URL
from shiftover.flows.context import REHEARSAL, RunContext, RunOptions
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.phases import Phase
from shiftover.plan import DualWriteStage
from shiftover.tasks.rehearsal import rehearse_copy
from shiftover.tasks.routing import enable_dual_write


@flow(name="dual-write", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def dual_write(spec_path: str, control_url: str = DEFAULT_URL, flag_ttl_seconds: float = 1.0) -> dict[str, object]:
    """Turn dual-write on (and create the new table first with ``backfill.create_target``)."""
    return run_plan(spec_path, control_url, RunOptions(flag_ttl_seconds=flag_ttl_seconds), flows={"dual-write"})


def run_dual_write(ctx: RunContext, stage: DualWriteStage) -> Outcome:
    claim_tables_of(ctx)  # refused here, before the new table or a flag: a schema change holds one of them
    if stage.create_target and create_target(ctx):
        claim_tables_of(ctx)  # the new table exists now: held from here on too
    enable_dual_write(ctx.store.engine, ctx.name, ctx.actor, ctx.lease)
    time.sleep(2 * ctx.options.flag_ttl_seconds)  # every app instance's flag cache has refreshed by now
    get_run_logger().info("dual-write is on for %s", ctx.name)
    return Outcome(True, "dual-write on", {"phase": Phase.DUAL_WRITING})


def rehearse_first(ctx: RunContext, stage: DualWriteStage) -> None:
    """The rehearsal, while the migration is still ``planned``: ``RehearsalError`` with every finding
    stops the run before the new table is created or dual-write is switched on."""
    if ctx.state().phase is not Phase.PLANNED:
        return
    # planned again after a rollback: rows an earlier run copied (dual-write was on) are its own, not a clash
    restarted = any(h.phase == Phase.DUAL_WRITING for h in ctx.store.history(ctx.name))
    report = rehearse_copy(ctx.migration, restarted)
    ctx.store.audit(
        ctx.name,
        ctx.actor,
        REHEARSAL,
        {"rows": report.rows, "seconds": round(report.seconds, 3), "findings": [str(f) for f in report.findings]},
    )
    report.require()


def claim_tables_of(ctx: RunContext) -> None:
    """The old and new tables claimed for this move (``shiftover.schema.claim``): one unfinished
    migration per table, whatever its kind."""
    from shiftover.schema.claim import claim_tables
    from shiftover.schema.columns import Target

    m = ctx.migration
    key = tuple(m.mapping.key)
    sides = [(m.source, m.spec.source), (m.target, m.spec.target)]
    targets = [Target(engine, side.table, side.schema_name, key) for engine, side in sides]
    claim_tables(ctx.store, ctx.name, ctx.actor, targets, ctx.lease)


def create_target(ctx: RunContext) -> bool:
    """The new table from the old one's schema, if absent (True when it was created); the run's
    mapping is then checked against it."""
    from shiftover.backfill.typemap import create_target_table
    from shiftover.mapping import forget_reflections
    from shiftover.preflight import check_target

    m = ctx.migration
    created = create_target_table(m.source, m.target, m.mapping)
    if created:
        forget_reflections()
        m.store.audit(m.name, ctx.actor, "create_target", {"table": m.spec.target.table})
    check_target(m.spec, m.mapping)
    return bool(created)
