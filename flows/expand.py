"""Expand/contract: a schema change on one live table, run by the one evaluator.

The plan (``shiftover.schema.plan``) is a list of typed stages; ``evaluate`` walks it exactly as it
walks a table move's: a done stage is skipped, an approval pauses the run (``stop_sync`` and
``drop_old_columns``, both irreversible), and each stage is recorded done with its phase in one
transaction fenced by the run's lease. The runners below only call the plain functions of
``shiftover.schema`` with the run's engines (expand also builds the spec's indexes; ``constrain``,
present when the spec adds CHECKs, NOT NULLs or foreign keys, enforces them after validate).
Validate also runs the spec's Great Expectations (``shiftover.schema.expectations``) once its SQL
checks pass, records them in the audit log and publishes them as a table artifact.
``rollback_schema_change`` undoes everything before contract: flags back to the old columns,
constraints (once the run reached ``validated``), indexes, triggers and new columns dropped, a
renamed table renamed back, ``rolled_back`` entered. A stage's DDL and a rollback's never
interleave (``fenced_ddl``), and a change first claims its table (``shiftover.schema.claim``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext

from shiftover.backfill.checkpoints import clear_plan
from shiftover.control.store import DEFAULT_URL, ControlStore, open_store
from shiftover.expectations import preload_great_expectations
from shiftover.flags.store import set_flag
from shiftover.flows.approval import require_auto_permission
from shiftover.flows.context import LeasedRun, RunOptions, forgotten_if_refused, leased, retention_wait
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.evaluate import Outcome, StageRunner, evaluate
from shiftover.flows.runtime import actor
from shiftover.phases import Phase, is_at_least
from shiftover.plan import MigrationState, Plan, Stage, read_state
from shiftover.plan.stages import STARTED
from shiftover.rollback import fence_off
from shiftover.schema.backfill import backfill_columns, checkpoint_name
from shiftover.schema.canary import canary_reads
from shiftover.schema.change import SchemaChange, open_schema_change
from shiftover.schema.claim import claim_table
from shiftover.schema.columns import (
    drop_old_columns,
    expand,
    install_sync,
    rename_table,
    rollback_expansion,
    stop_sync,
)
from shiftover.schema.constraints import build_indexes, enforce_constraints
from shiftover.schema.dry_run import check_ups_on_rows
from shiftover.schema.errors import ContractRefusedError, OutOfStepError
from shiftover.schema.expectations import ExpectationsReport, describe, run_change_expectations
from shiftover.schema.plan import (
    BackfillColumnsStage,
    ConstrainStage,
    DropOldColumnsStage,
    ExpandColumnsStage,
    StopSyncStage,
    SwitchColumnsStage,
    SyncColumnsStage,
    ValidateColumnsStage,
    build_schema_plan,
    flag_key,
)
from shiftover.schema.preflight import check_change
from shiftover.schema.spec import ExpandContractSpec, load_expand_contract
from shiftover.schema.validate import ValidationReport, rows_out_of_step, validate_columns
from shiftover.spec import stored_form
from shiftover.story import artifact_key

SchemaRunContext = LeasedRun[SchemaChange]


# -- runners: each calls one plain function with the run's engines ---------------------------------
def run_expand(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    with fenced_ddl(ctx):
        report = rename_table(
            ctx.migration.target, ctx.migration.spec, expand(ctx.migration.target, ctx.migration.spec)
        )
        added = report.statements
        report = build_indexes(ctx.migration.target, ctx.migration.spec, report)
    built = report.statements - added
    reason = f"{added} column/table statement(s), {built} index statement(s), {report.lock_timeouts} lock timeout(s)"
    return Outcome(True, reason, vars(report))


def run_sync(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    with fenced_ddl(ctx):
        report = install_sync(ctx.migration.target, ctx.migration.spec)
    installed = (
        "sync triggers installed" if ctx.migration.spec.sync == "triggers" else "no triggers (sync: application)"
    )
    return Outcome(True, f"{installed}, {report.lock_timeouts} lock timeout(s)", vars(report))


def run_backfill(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    ctx.advance(Phase.BACKFILLING, "column backfill started")
    report = backfill_columns(
        ctx.migration.target,
        ctx.migration.spec,
        ctx.store.engine,
        time_budget_seconds=ctx.options.time_budget_seconds,
        fence=ctx.lease.ensure,
    )
    detail = {"rows_updated": report.rows_updated, "batches": report.batches, "rows_per_second": report.rows_per_second}
    return Outcome(report.complete, f"{report.rows_updated} row(s) updated in {report.batches} batch(es)", detail)


def catch_up(ctx: SchemaRunContext) -> int:
    """``sync: application``: no trigger kept the rows written since the backfill by anything but
    ``ColumnWrites`` in step, so before validating, one more pass of the column backfill (from a
    fresh checkpoint) sets new = up(old) where they differ. The old columns are still the source of
    truth here (writes switch after validate). Returns the rows it changed, which the stage reports:
    a writer outside ColumnWrites shows up as a count, not as silence."""
    spec = ctx.migration.spec
    clear_plan(ctx.store.engine, checkpoint_name(spec))
    report = backfill_columns(ctx.migration.target, spec, ctx.store.engine, fence=ctx.lease.ensure)
    return report.rows_updated


def run_validate(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    spec = ctx.migration.spec
    if spec.expectations:
        preload_great_expectations()  # its import overlaps the checks in SQL
    caught_up = catch_up(ctx) if spec.sync == "application" and spec.moves else None
    report = validate_columns(ctx.migration.target, spec)
    detail: dict[str, Any] = {"checks": [vars(c) | {"keys": [list(k) for k in c.keys]} for c in report.checks]}
    if caught_up is not None:
        detail["caught_up_rows"] = caught_up
    ctx.store.audit(ctx.name, ctx.actor, "schema_validation", detail)
    publish_validation(ctx.name, report, caught_up)
    report.require()  # a mismatch stops the run here, with the keys and the query
    reason = "; ".join(f"{c.what}: {c.rows_checked} rows, 0 mismatches" for c in report.checks)
    if caught_up is not None:
        reason = (
            f"{caught_up} row(s) written outside ColumnWrites since the backfill put in step first (sync: "
            f"application); {reason}"
        )
    if spec.expectations:  # after the checks above: the new columns exist and hold up(old)
        suite = run_change_expectations(ctx.migration.target, spec)
        outcome = {"passed": suite.passed, "summary": suite.summary(), "outcomes": suite.rows()}
        ctx.store.audit(ctx.name, ctx.actor, "schema_expectations", outcome)
        publish_expectations(ctx.name, suite)
        suite.require()  # a failed blocking expectation stops the run here, each one named
        detail["expectations"] = outcome
        reason += f"; {suite.summary()}"
    return Outcome(True, reason, detail)


def publish_validation(name: str, report: ValidationReport, caught_up: int | None, *, stage: str = "validate") -> None:
    """Each check of the validate stage (new = up(old), down(up(old)) = old), or of stop_sync's proof
    that every row is in step, as a table artifact of the current flow run (a no-op outside one),
    under ``<change>-validation`` / ``<change>-in-step``: passed or failed, the operator reads the
    same rows, with the first differing keys and the query that finds them all."""
    if FlowRunContext.get() is None:
        return
    rows = [
        {
            "check": c.what,
            "rows checked": c.rows_checked,
            "mismatches": c.mismatches,
            "first keys": ", ".join(str(list(k)) for k in c.keys[:10]),
            "query": c.query if c.mismatches else "",
        }
        for c in report.checks
    ]
    also = f"; {caught_up} row(s) written outside ColumnWrites put in step first" if caught_up else ""
    if stage == "validate":
        key, what, stopped = "validation", "Column validation", "the run stopped before switch_reads"
    else:
        key, what, stopped = "in-step", "Rows in step before stop_sync", "stop_sync refused before its DDL"
    verdict = "passed" if report.passed else f"FAILED: {stopped}"
    create_table_artifact(key=artifact_key(name, key), table=rows, description=f"{what} of {name}: {verdict}{also}")


def publish_expectations(name: str, suite: ExpectationsReport) -> None:
    """The expectations' outcome as a table artifact of the current flow run (a no-op outside one),
    under a stable key: ``<change>-expectations``."""
    if FlowRunContext.get() is None:
        return
    verdict = "passed" if suite.passed else "FAILED: " + "; ".join(describe(o) for o in suite.failed)
    create_table_artifact(
        key=artifact_key(name, "expectations"),
        table=suite.rows(),
        description=f"Great Expectations on the changed table of {name} at validate: {suite.summary()}; {verdict}",
    )


def run_constrain(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    with fenced_ddl(ctx):
        report = enforce_constraints(ctx.migration.target, ctx.migration.spec)
    done = len(ctx.migration.spec.constraints)
    return Outcome(True, f"{done} constraint(s) enforced, {report.lock_timeouts} lock timeout(s)", vars(report))


def run_switch(ctx: SchemaRunContext, stage: SwitchColumnsStage) -> Outcome:
    flag = stage.flag
    key = flag_key(ctx.name, flag)
    if flag == "reads" and ctx.migration.spec.reads is not None:
        steps = canary_reads(ctx.store.engine, ctx.migration.spec, ctx.actor, fence=ctx.lease)
        seen = ", ".join(f"{s['percent']:g} % ({s['shadow_reads']:g} shadow reads)" for s in steps)
        return Outcome(True, f"{key} -> new columns through canary steps {seen}", {"canary": steps})
    set_flag(ctx.store.engine, key, {"columns": "new"}, ctx.actor, migration=ctx.name, fence=ctx.lease)
    return Outcome(True, f"{key} -> new columns")


def run_stop_sync(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    # proved before the stage is recorded as begun, so a refusal leaves it reversible; a run killed
    # inside the stage had its proof, and its triggers may be swapped already: it finishes the DDL
    proof = "begun by an earlier run" if stage.name in ctx.state().started else prove_in_step(ctx)
    with fenced_ddl(ctx, irreversible=stage):
        report = stop_sync(ctx.migration.target, ctx.migration.spec)
    swapped = (
        "two-way sync triggers swapped for forward-only ones (old -> new)"
        if ctx.migration.spec.sync == "triggers"
        else "no sync triggers (sync: application)"
    )
    return Outcome(True, f"{proof}; old columns no longer required, {swapped}", vars(report))


def prove_in_step(ctx: SchemaRunContext) -> str:
    """The last proof before the old columns stop being kept: every row's two sides connected by
    ``up`` or ``down`` (``rows_out_of_step``), audited and published beside the validate stage's
    checks; a row in neither direction refuses the stage, naming its key (``OutOfStepError``)."""
    spec = ctx.migration.spec
    report = rows_out_of_step(ctx.migration.target, spec)
    detail = {"checks": [vars(c) | {"keys": [list(k) for k in c.keys]} for c in report.checks]}
    ctx.store.audit(ctx.name, ctx.actor, "schema_in_step", detail)
    publish_validation(ctx.name, report, None, stage="stop_sync")
    report.require(OutOfStepError)
    return "; ".join(f"{c.what}: {c.rows_checked} rows, 0 out of step" for c in report.checks) or "no column moves"


def drop_old_due(ctx: SchemaRunContext, stage: DropOldColumnsStage) -> str | None:
    """Why drop_old_columns must wait (the spec's ``retention_hours`` after stop_sync, or the run's
    ``retention_seconds``), or None when it is due; its approval is asked only then."""
    seconds = stage.retention_seconds if ctx.options.retention_seconds is None else ctx.options.retention_seconds
    waiting = retention_wait(ctx, Phase.OLD_WRITES_STOPPED, seconds, "the old columns (no longer written) are")
    if waiting:
        publish_retention(ctx.name, waiting, seconds)
    return waiting


def publish_retention(name: str, waiting: str, seconds: float) -> None:
    """Why the run ended before drop_old_columns, and when the drop is due, as a markdown artifact of
    the current flow run (a no-op outside one) under ``<change>-retention``, and in its log: the run
    ends Completed, and without this nothing in the UI says the old columns are still there."""
    if FlowRunContext.get() is None:
        return
    get_run_logger().info("drop_old_columns of %s waits: %s", name, waiting)
    create_markdown_artifact(
        key=artifact_key(name, "retention"),
        markdown=(
            f"# {name}: drop_old_columns waits for its retention period\n\n"
            f"{waiting}.\n\n"
            f"The retention period ({seconds:g} s after stop_sync) keeps the old columns, and their data, "
            "until the new version has run long enough to trust; meanwhile a write by an application "
            "instance still on the old version reaches the new columns (the forward-only sync triggers, "
            "or ColumnWrites under `sync: application`). A later run asks the "
            "drop's approval once the time has passed (or sooner with `retention_seconds=0`)."
        ),
        description=f"{name}: the drop of the old columns is not due yet",
    )


def run_drop_old(ctx: SchemaRunContext, stage: Stage) -> Outcome:
    with fenced_ddl(ctx, irreversible=stage):
        report = drop_old_columns(ctx.migration.target, ctx.migration.spec)
    ctx.advance(Phase.ARCHIVED, "expand/contract keeps no archive: the old columns are dropped")
    return Outcome(True, "old columns dropped", vars(report))


@contextmanager
def fenced_ddl(ctx: SchemaRunContext, *, irreversible: Stage | None = None) -> Iterator[None]:
    """A stage's DDL under the table's DDL lock (``Target.ddl_mutex``), after the run's fence is
    checked inside it. A rollback fences the run off, then takes the same lock: the DDL in flight
    ends before the rollback looks at the table, and none starts after. For an ``irreversible``
    stage the check is a fenced audit entry saying its DDL begins (``STARTED``): a rollback that
    finds one (the run killed inside the stage) refuses and changes nothing."""
    with ctx.migration.target.ddl_mutex():
        if irreversible is None:
            ctx.lease.ensure()
        else:
            ctx.store.audit(ctx.name, ctx.actor, STARTED, {"stage": irreversible.name}, lease=ctx.lease)
        yield


SCHEMA_RUNNERS: Mapping[type[Stage], StageRunner[SchemaRunContext]] = {
    ExpandColumnsStage: StageRunner(run_expand),
    SyncColumnsStage: StageRunner(run_sync),
    BackfillColumnsStage: StageRunner(run_backfill),
    ValidateColumnsStage: StageRunner(run_validate),
    ConstrainStage: StageRunner(run_constrain),
    SwitchColumnsStage: StageRunner(run_switch),
    StopSyncStage: StageRunner(run_stop_sync),
    DropOldColumnsStage: StageRunner(run_drop_old, wait=drop_old_due),
}


# -- the edge -------------------------------------------------------------------------------------
def run_schema_change(
    spec_path: str, control_url: str, options: RunOptions, *, stop_after: str | None = None, restart: bool = False
) -> dict[str, Any]:
    """Open the change once, take its lease, and evaluate its plan."""
    admit_control_url(control_url)
    spec = load_expand_contract(spec_path)
    plan = build_schema_plan(spec)
    plan.check_stop_after(stop_after)
    require_auto_permission(spec, options.auto_approve)
    store = open_store(control_url)
    registration = store.enroll(spec.name, stored_form(spec))
    state = read_state(store, spec.name)
    if state.phase is Phase.ROLLED_BACK and not restart:
        return {"phase": state.phase, "note": f"{spec.name} is rolled back; nothing was run (restart to begin again)"}
    if plan.finished(state):
        return {"phase": state.phase, "note": f"nothing left to do: every stage is done (phase {state.phase})"}
    # a first run refused by the spec checks, its rows (every ``up`` computed on every row: one that
    # fails would fail the application's writes once the sync triggers run it) or the table's claim
    # leaves no migration behind
    with (
        leased(store, spec.name, options) as (lease, holder),
        forgotten_if_refused(store, spec.name, lease, registration.created),
    ):
        if not plan.stages[0].done(read_state(store, spec.name)):
            check_change(spec)  # before any DDL: a bad column or expression is refused by its spec field
        ctx = SchemaRunContext(open_schema_change(spec, store), plan, lease, holder, actor(), options)
        if not plan.stages[0].done(ctx.state()):
            checked = check_ups_on_rows(ctx.migration.target, spec)  # before the claim and any DDL
            claim_table(store, spec.name, ctx.actor, ctx.migration.target, lease)  # one unfinished change per table
            store.audit(spec.name, ctx.actor, "rows_checked", vars(checked), lease=lease)
        if restart and ctx.state().phase is Phase.ROLLED_BACK:
            ctx.advance(Phase.PLANNED, "restart after rollback: the plan runs again from expand")
        return evaluate(ctx, stop_after=stop_after)


def rollback_schema_change(
    spec: ExpandContractSpec, store: ControlStore, who: str, reason: str = "manual rollback"
) -> dict[str, Any]:
    """Before contract: flags back to the old columns, triggers and new columns dropped, the table as
    it was (holding every write made through either column); refused once ``stop_sync`` began.

    Like a table move's rollback it never waits for the lease: it revokes it and cancels pending
    approvals (``fence_off``), so a running run stops at its next fenced write. It waits only for
    the run's DDL in flight (the table's DDL lock, ``fenced_ddl``), then reads the state again
    (that run may have begun ``stop_sync`` in between, or another rollback finished)."""
    plan = build_schema_plan(spec)
    first = read_state(store, spec.name)
    if first.phase is Phase.ROLLED_BACK:
        return {"phase": first.phase, "note": "already rolled back"}
    refuse_after_contract(plan, first)
    fence_off(store, spec.name, who, reason)
    change = open_schema_change(spec, store)
    with change.target.ddl_mutex():  # the run's DDL in flight ends first (``fenced_ddl``)
        state = read_state(store, spec.name)
        if state.phase is Phase.ROLLED_BACK:  # another rollback finished while this one waited
            return {"phase": state.phase, "note": "already rolled back"}
        refuse_after_contract(plan, state)
        for flag in ("writes", "reads"):
            set_flag(store.engine, flag_key(spec.name, flag), {"columns": "old"}, who, migration=spec.name)
        # the constrain stage runs after validate: before that phase no NOT NULL of this change exists
        report = rollback_expansion(change.target, spec, constrained=is_at_least(state.phase, Phase.VALIDATED))
        clear_plan(store.engine, checkpoint_name(spec))  # the new columns are gone: a restart backfills afresh
        store.audit(spec.name, who, "rollback", {"from": state.phase, "ddl": vars(report)})
        store.transition(spec.name, Phase.ROLLED_BACK, who, f"schema change rolled back before contract: {reason}")
    return {"phase": Phase.ROLLED_BACK, "from": state.phase, "statements": report.statements}


def refuse_after_contract(plan: Plan, state: MigrationState) -> None:
    """``ContractRefusedError`` once ``stop_sync`` began: the old columns no longer follow the new ones."""
    done = plan.irreversibly_done(state)
    if done:
        names = ", ".join(s.name for s in done)
        raise ContractRefusedError(
            f"rollback of {plan.migration!r} refused: {names} cannot be undone (the old columns no longer follow "
            "the new ones); the table was not changed. Write a new expand_contract spec that changes the columns back"
        )


@flow(name="expand-contract-rollback", log_prints=True)
def expand_contract_rollback(
    spec_path: str, control_url: str = DEFAULT_URL, reason: str = "manual rollback"
) -> dict[str, Any]:
    """Undo a schema change before contract: the table as it was, every write kept."""
    admit_control_url(control_url)
    result = rollback_schema_change(load_expand_contract(spec_path), open_store(control_url), actor(), reason)
    return {**result, "reason": reason}


@flow(name="expand-contract", log_prints=True)
def expand_contract(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    auto_approve: bool = False,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    time_budget_seconds: float | None = None,
    stop_after: str | None = None,
    restart: bool = False,
    retention_seconds: float | None = None,
) -> dict[str, Any]:
    """Change a live table's schema in place: expand, sync, backfill, validate, switch, contract.
    ``retention_seconds`` overrides the spec's ``retention_hours`` between stop_sync and the drop."""
    options = RunOptions(
        auto_approve=auto_approve,
        retention_seconds=retention_seconds,
        approval_timeout_seconds=approval_timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        time_budget_seconds=time_budget_seconds,
    )
    return run_schema_change(spec_path, control_url, options, stop_after=stop_after, restart=restart)
