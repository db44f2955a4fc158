"""The evaluator: walks a migration's plan and runs every stage that is not done.

For each stage, in plan order: skip it when its ``done`` predicate holds; otherwise let its
runner say whether it must wait (a retention period), run its gates where the stage declares
them, ask for its approval if it has one, run it, and record it done (entering its phase) in one
transaction fenced by the run's lease. The explainer (``shiftover.plan.explain``) reads the same
stages, so what ``shiftover plan`` prints is what runs. Every stage flow (``dual-write``,
``backfill``, ``validate``, ``cutover``, ``decommission``) and ``migrate`` call ``run_plan``:
a stage flow runs its own stages only, and refuses when an earlier stage is not done.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from shiftover.errors import StageOrderError
from shiftover.flags.routing import WriteMode
from shiftover.flows.approval import obtain_approval, require_auto_permission
from shiftover.flows.context import LeasedRun, RunOptions, hold, open_plan
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.runtime import actor
from shiftover.flows.story import publish_story_quietly
from shiftover.phases import Phase
from shiftover.plan import Stage, build_plan
from shiftover.spec import load_spec


@dataclass(frozen=True)
class Outcome:
    """What a stage runner did: ``complete`` False stops the walk (a time budget ran out)."""

    complete: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C", bound=LeasedRun[Any])


@dataclass(frozen=True)
class StageRunner(Generic[C]):
    """How one stage type runs, over the context its plan's runs carry (a table move's
    ``RunContext``, a schema change's ``LeasedRun[SchemaChange]``)."""

    run: Callable[[C, Any], Outcome]
    # A reason to stop before the stage (e.g. its retention period has not passed), or None.
    wait: Callable[[C, Any], str | None] | None = None
    # Raises when the stage cannot run at all, before its gates and approval ask anyone anything.
    precheck: Callable[[C, Any], None] | None = None


def run_plan(
    spec_path: str,
    control_url: str,
    options: RunOptions,
    *,
    flows: Collection[str] | None = None,
    stop_after: str | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Open the migration once, take its lease, and evaluate its plan (or the stages of ``flows``)."""
    admit_control_url(control_url)
    spec = load_spec(spec_path)
    options = replace(options, spec_path=spec_path, control_url=control_url)
    build_plan(spec).check_stop_after(stop_after)  # refused before the control store is opened
    require_auto_permission(spec, options.auto_approve)
    plan = build_plan(spec)
    opened = open_plan(spec, control_url, register=flows is None or plan.stages[0].flow in flows)
    state = opened.state
    if state.phase is Phase.ROLLED_BACK and not restart:
        return {"phase": state.phase, "note": rolled_back_note(opened.store, opened.spec.name)}
    if opened.plan.finished(state):
        return {"phase": state.phase, "note": f"nothing left to do: every stage is done (phase {state.phase})"}
    with hold(opened, actor(), options) as ctx:
        try:
            if restart and ctx.state().phase is Phase.ROLLED_BACK:
                ctx.advance(Phase.PLANNED, "restart after rollback: the plan runs again from dual-write")
            return evaluate(ctx, flows=flows, stop_after=stop_after)
        finally:
            publish_story_quietly(ctx.store, ctx.migration.spec)


def evaluate(
    ctx: LeasedRun[Any], *, flows: Collection[str] | None = None, stop_after: str | None = None
) -> dict[str, Any]:
    """Run what is not done, in plan order; returns what ran, what was skipped, and where it stopped."""
    from shiftover.flows.runners import RUNNERS

    report: dict[str, Any] = {"migration": ctx.name, "ran": [], "skipped": [], "stages": {}}
    preload_for_walk(ctx, flows, stop_after)
    entered = False
    for i, stage in enumerate(ctx.plan):
        in_scope = flows is None or stage.flow in flows
        if stage.done(ctx.state()):
            report["skipped"].append(stage.name)
            entered = entered or in_scope
            if stop_after is not None and ctx.plan.stops_after(i, stop_after):
                break  # asked to stop here, and here is already done
            continue
        if not in_scope:
            if entered:
                break  # past this flow's stages
            raise StageOrderError(ctx.name, ctx.state().phase, stage.name, stage.flow)
        entered = True
        runner = RUNNERS[type(stage)]
        waiting = runner.wait(ctx, stage) if runner.wait else None
        if waiting:
            report["waiting"] = waiting
            break
        outcome = run_stage(ctx, stage, runner)
        report["stages"][stage.name] = outcome.detail
        if not outcome.complete:
            report["incomplete"] = stage.name
            break
        report["ran"].append(stage.name)
        if stop_after is not None and ctx.plan.stops_after(i, stop_after):
            break
    if flows is not None:  # a stage flow answers with its stages' own figures too
        for detail in report["stages"].values():
            report.update(detail)
    report["phase"] = ctx.state().phase
    return report


def declares_expectations(ctx: LeasedRun[Any], stage: Stage) -> bool:
    """Whether the stage has an expectations gate with expectations the spec declares (the default
    suite runs in SQL and needs no Great Expectations)."""
    from shiftover.checks.data import stage_expectations

    if stage.gate_section is None or all(g.name != "expectations" for g in stage.gates):
        return False
    return bool(stage_expectations(ctx.migration, stage.gate_section))


def preload_expectations(ctx: LeasedRun[Any], stage: Stage) -> None:
    """Start importing Great Expectations (3 s or more) in the background when the stage declares
    expectations (a no-op when ``preload_for_walk`` started it already)."""
    from shiftover.expectations import preload_great_expectations

    if declares_expectations(ctx, stage):
        preload_great_expectations()


def preload_for_walk(ctx: LeasedRun[Any], flows: Collection[str] | None, stop_after: str | None) -> None:
    """Start the Great Expectations import when the walk begins if a stage it will reach declares
    expectations, so the import overlaps the earlier stages (the dual-write stage's wait for flag
    caches, the backfill) instead of the validate stage's own gates: measured in the demo (100k
    SQLite rows, live application), started at the validate stage it still held the expectations
    gate about 3 s, its thread slowed by the checksum scan and the application's threads.
    A run that stops before such a stage (``stop_after``, another stage flow) does not import it."""
    from shiftover.expectations import preload_great_expectations

    state = ctx.state()
    for i, stage in enumerate(ctx.plan):
        if (flows is None or stage.flow in flows) and not stage.done(state) and declares_expectations(ctx, stage):
            preload_great_expectations()
            return
        if stop_after is not None and ctx.plan.stops_after(i, stop_after):
            return


def run_stage(ctx: LeasedRun[Any], stage: Stage, runner: StageRunner[Any]) -> Outcome:
    """Gates where the stage declares them, its approval, its work, and its completion (fenced)."""
    gate_lines: list[str] = []
    preload_expectations(ctx, stage)
    if runner.precheck is not None:
        runner.precheck(ctx, stage)
    if stage.gates_run == "before":
        gate_lines = gate_stage(ctx, stage)
    if stage.approval is not None:
        obtain_approval(ctx, stage.name, approval_summary(ctx, stage, gate_lines))
    outcome = runner.run(ctx, stage)
    if not outcome.complete:
        return outcome
    if stage.gates_run == "after":
        gate_stage(ctx, stage)
    ctx.store.complete_stage(ctx.name, stage.name, stage.reaches, ctx.actor, outcome.reason, lease=ctx.lease)
    return outcome


def gate_stage(ctx: LeasedRun[Any], stage: Stage) -> list[str]:
    """Run the stage's declared gates (a blocking failure raises ``GateError``); one line each."""
    from shiftover.tasks.gates import check_gates

    if not stage.gates or stage.gate_section is None:
        return []
    results = check_gates(ctx.migration, stage.gate_section, stage.gates, actor=ctx.actor)
    return [f"- {r.gate}: {'passed' if r.passed else 'FAILED'} — {r.summary}" for r in results]


def approval_summary(ctx: LeasedRun[Any], stage: Stage, gate_lines: list[str]) -> str:
    """The markdown on the approval form: what will happen, its undo, the state now, the gates."""
    state = ctx.state()
    routing = state.routing
    lines = [
        f"## Approve `{stage.name}` for migration `{ctx.name}`",
        "",
        f"- **What happens:** {stage.does}.",
        f"- **Why a person approves:** {stage.approval.why if stage.approval else '-'}.",
        f"- **Undo:** {stage.inverse.describe() if stage.inverse else 'this step cannot be undone'}.",
        (
            f"- **Now:** phase `{state.phase}` (epoch {state.epoch}), writes `{routing.writes}`, "
            f"reads {routing.reads_percent:g}% on the new store."
        ),
        "",
        "### Gates",
        *(gate_lines or ["- (no gates at this step)"]),
        "",
        f"Type **{ctx.name}** in *Confirm Name* to approve. A rollback before you answer cancels this request.",
    ]
    if not stage.reversible:
        lines.insert(2, "**This step is IRREVERSIBLE.**\n")
    if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
        lines.insert(2, "**Note:** the new store is already the source of truth.\n")
    return "\n".join(lines)


def rolled_back_note(store: Any, migration: str) -> str:
    last = [h for h in store.history(migration) if h.phase == Phase.ROLLED_BACK][-1]
    return (
        f"{migration} was rolled back at {last.at.isoformat(timespec='seconds')} by {last.actor} ({last.reason}); "
        "nothing was run. To start again from dual-write (the copied rows are kept and topped up, then "
        "validated again): `shiftover run SPEC --restart` (flow parameter restart=true)"
    )
