"""The evaluator: walks a migration's plan and runs every stage that is not done.

For each stage, in plan order: skip it when its ``done`` predicate holds; otherwise let its
runner say whether it must wait (a retention period), run its gates where the stage declares
them, ask for its approval if it has one, run it, and record it done (entering its phase) in one
transaction fenced by the run's lease. The explainer (``shiftover.plan.explain``) reads the same
stages, so what ``shiftover plan`` prints is what runs. Every stage flow (``dual-write``,
``backfill``, ``validate``, ``cutover``, ``decommission``) and ``migrate`` call ``run_plan``:
a stage flow runs its own stages only, and refuses when an earlier stage is not done.

The same walk runs expand/contract (``flows/expand.py``) and route moves (``flows/routes.py``):
the run (a ``StagedRun``) says what its state is and how a stage is recorded done, each stage
answers ``done(state)``, and ``flows/runners.py`` gives each stage type its runner.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from shiftover.connect import get_engine
from shiftover.control.segment_leases import require_distributed_store
from shiftover.errors import StageOrderError
from shiftover.flows.approval import obtain_approval, require_auto_permission
from shiftover.flows.context import REHEARSAL, RunOptions, StagedRun, forgotten_if_refused, hold, open_plan
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.runtime import actor
from shiftover.flows.story import publish_story_quietly
from shiftover.phases import Phase
from shiftover.plan import build_plan
from shiftover.spec import load_spec


@dataclass(frozen=True)
class Outcome:
    """What a stage runner did: ``complete`` False stops the walk (a time budget ran out)."""

    complete: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C", bound=StagedRun)


@dataclass(frozen=True)
class StageRunner(Generic[C]):
    """How one stage type runs, over the context its plan's runs carry (a table move's
    ``RunContext``, a schema change's ``LeasedRun[SchemaChange]``, a route move's ``RouteRun``)."""

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
    for field_name, work in spec.distributed_fields():  # refused before the migration is registered
        require_distributed_store(get_engine(control_url), field_name, what=work)
    opened = open_plan(spec, control_url, register=flows is None or plan.stages[0].flow in flows)
    state = opened.state
    if state.phase is Phase.ROLLED_BACK and not restart:
        return {"phase": state.phase, "note": rolled_back_note(opened.store, opened.spec.name)}
    if opened.plan.finished(state):
        return {"phase": state.phase, "note": f"nothing left to do: every stage is done (phase {state.phase})"}
    with hold(opened, actor(), options) as ctx:
        try:
            # a first run refused by its first stage (a claimed table, the rehearsal) leaves no migration
            with forgotten_if_refused(ctx.store, ctx.name, ctx.lease, opened.created, evidence=(REHEARSAL,)):
                if restart and ctx.state().phase is Phase.ROLLED_BACK:
                    ctx.advance(Phase.PLANNED, "restart after rollback: the plan runs again from dual-write")
                return evaluate(ctx, flows=flows, stop_after=stop_after)
        finally:
            publish_story_quietly(ctx.store, ctx.migration.spec)


def ask_person(ctx: StagedRun, stage: Any, summary: str) -> str:
    """A stage's approval, for every kind of run: a request in the control store at the lease's
    epoch, the typed form (signed when the spec lists keys) on a Prefect pause, the answer checked
    and counted against the lease (``flows/approval.obtain_approval``). Returns who approved."""
    return obtain_approval(ctx, stage.name, summary).approver


# (run, stage, the form's text) -> who approved; raises ApprovalError to refuse.
Approve = Callable[[Any, Any, str], str]


def evaluate(
    ctx: StagedRun,
    *,
    flows: Collection[str] | None = None,
    stop_after: str | None = None,
    approve: Approve = ask_person,
) -> dict[str, Any]:
    """Run what is not done, in plan order; returns what ran, what was skipped, and where it stopped.

    The same walk for every kind of migration: each stage answers ``done`` against the run's
    state, and the run records it done (``StagedRun``); the runner comes from the one table
    (``flows/runners.py``). ``approve`` is how approvals are asked (a person, by default)."""
    from shiftover.flows.runners import RUNNERS

    report: dict[str, Any] = {"migration": ctx.name, "ran": [], "skipped": [], "stages": {}}
    ctx.prepare_walk(flows, stop_after)
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
            raise StageOrderError(ctx.name, str(ctx.position().get("phase", "")), stage.name, stage.flow)
        entered = True
        runner = RUNNERS[type(stage)]
        waiting = runner.wait(ctx, stage) if runner.wait else None
        if waiting:
            report["waiting"] = waiting
            break
        outcome = run_stage(ctx, stage, runner, approve)
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
    report.update(ctx.position())
    return report


def run_stage(ctx: StagedRun, stage: Any, runner: StageRunner[Any], approve: Approve = ask_person) -> Outcome:
    """Gates where the stage declares them, its approval, its work, and its completion (fenced)."""
    gate_lines: list[str] = []
    ctx.prepare(stage)
    if runner.precheck is not None:
        runner.precheck(ctx, stage)
    if stage.gates_run == "before":
        gate_lines = ctx.gate(stage)
    if stage.approval is not None:
        approve(ctx, stage, ctx.approval_summary(stage, gate_lines))
    outcome = runner.run(ctx, stage)
    if not outcome.complete:
        return outcome
    if stage.gates_run == "after":
        ctx.gate(stage)
    ctx.complete(stage, outcome.reason, outcome.detail)
    return outcome


def rolled_back_note(store: Any, migration: str) -> str:
    last = [h for h in store.history(migration) if h.phase == Phase.ROLLED_BACK][-1]
    return (
        f"{migration} was rolled back at {last.at.isoformat(timespec='seconds')} by {last.actor} ({last.reason}); "
        "nothing was run. To start again from dual-write (the copied rows are kept and topped up, then "
        "validated again): `shiftover run SPEC --restart` (flow parameter restart=true)"
    )
