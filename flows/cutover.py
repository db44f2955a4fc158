"""Stage 4, cutover: shadow reads, canary read steps with gates watching each soak, then the
write switch (after an approval). Each step's undo is a flag flip (the rollback flow).

A failing gate during a canary step rolls the migration back at once (reads and writes to the
old store, pending approvals cancelled, the reason audited and published) and fails the run. The
write switch is fenced three ways: the queue drained and the last diff clean, a compare-and-set
on the writes flag, and the run's lease (a rollback that came first makes it flip nothing).
"""

from __future__ import annotations

import time
from datetime import datetime

from prefect import flow, get_run_logger

from shiftover.checks.gate import DiffScope, GateContext, run_gates
from shiftover.control.store import DEFAULT_URL, utcnow
from shiftover.errors import GateError
from shiftover.flows.context import RunContext, RunOptions
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.phases import Phase
from shiftover.plan import CanaryStep, ShadowReadsStage, SwitchWritesStage, read_state
from shiftover.reconcile import require_reversible
from shiftover.rollback import RollbackResult, roll_back
from shiftover.tasks import routing as flips
from shiftover.tasks.gates import check_gates


@flow(name="cutover")
def cutover(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    soak_seconds: float | None = None,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
    watch_seconds: float = 5.0,
    suspend: bool | None = None,
) -> dict[str, object]:
    """Move reads step by step, then writes, to the new store.

    ``suspend`` waits for the approval with ``suspend_flow_run`` (default: when started from a
    deployment); the flow then re-runs from the top and skips the steps already done.
    """
    options = RunOptions(
        soak_seconds=soak_seconds,
        watch_seconds=watch_seconds,
        approval_timeout_seconds=approval_timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        auto_approve=auto_approve,
        suspend=suspend,
    )
    return run_plan(spec_path, control_url, options, flows={"cutover"})


def run_shadow_reads(ctx: RunContext, stage: ShadowReadsStage) -> Outcome:
    flips.start_shadow_reads(ctx.store.engine, ctx.name, ctx.actor, ctx.lease)
    ctx.advance(Phase.SHADOW_READING, "shadow reads on")
    return Outcome(True, "shadow reads on")


def run_canary_step(ctx: RunContext, stage: CanaryStep) -> Outcome:
    """Raise reads to the step's percentage, soak while the traffic gates watch, then gate the step.

    At the soak's end every canary gate runs, the checksum one over the rows changed since the
    step began. The first blocking failure rolls the migration back and fails the run.
    """
    started = utcnow()
    flips.move_reads(ctx.store.engine, ctx.name, stage.percent, ctx.actor, ctx.lease)
    ctx.advance(Phase.READS_CANARY, f"reads at {stage.percent:g}%")
    soak = stage.soak_seconds if ctx.options.soak_seconds is None else ctx.options.soak_seconds
    try:
        watch_soak(ctx, stage, soak)
        check_gates(
            ctx.migration,
            stage.gate_section or "canary",
            stage.gates,
            changed_since=started,
            actor=ctx.actor,
            step=stage.name,
            heading=f"Canary step `{stage.name}`: {stage.percent:g}% of reads on the new store, soaked {soak:g} s "
            f"while the traffic gates watched; the checksum compares the rows written during the step.",
        )
    except GateError as exc:
        roll_back_canary(ctx, stage, exc)
        raise
    get_run_logger().info("reads at %g%% passed their gates", stage.percent)
    return Outcome(True, f"reads at {stage.percent:g}% passed their gates")


def watch_soak(ctx: RunContext, stage: CanaryStep, soak_seconds: float) -> None:
    """Hold the step for ``soak_seconds``, checking the traffic gates (all but the checksum) and the
    lease as it goes: a rollback during the soak stops the run before its next flip."""
    deadline = time.monotonic() + soak_seconds
    traffic = tuple(g for g in stage.gates if g.name != "checksum")
    gate_ctx = GateContext(ctx.migration, stage.gate_section or "canary", DiffScope(), ctx.actor)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, ctx.options.watch_seconds))
        ctx.lease.ensure()
        if traffic and deadline - time.monotonic() > 0:
            run_gates(gate_ctx, traffic)


def roll_back_canary(ctx: RunContext, stage: CanaryStep, exc: GateError) -> None:
    """The whole migration back to the old store (the rollback flow's procedure), audited and published."""
    why = f"canary gate {exc.gate} failed at {stage.percent:g}% of reads: {exc.summary}"
    m = ctx.migration
    result = roll_back(
        ctx.store,
        ctx.plan,
        read_state(ctx.store, ctx.name),
        ctx.actor,
        f"automatic rollback: {why}",
        old=m.source,
        new=m.target,
        mapping=m.mapping,
        options=m.spec.validation,
    )
    ctx.store.audit(
        ctx.name, ctx.actor, "auto_rollback", {"step": stage.name, "gate": exc.gate, "summary": exc.summary}
    )
    publish_rollback_report(ctx, stage, exc, result)
    get_run_logger().error("automatic rollback: %s", why)


def publish_rollback_report(ctx: RunContext, stage: CanaryStep, exc: GateError, result: RollbackResult) -> None:
    from prefect.artifacts import create_markdown_artifact

    from shiftover.checks.report import render_overview
    from shiftover.story import artifact_key

    at: datetime | None = result.flipped_at
    lines = [
        f"# Automatic rollback of `{ctx.name}`",
        "",
        f"- **step:** `{stage.name}` ({stage.percent:g}% of reads)",
        f"- **failed gate:** `{exc.gate}` — {exc.summary}",
        f"- **reads and writes back on the old store at:** {at.isoformat() if at else '-'}",
        f"- **phase now:** `{ctx.store.phase(ctx.name)}`",
        "",
        render_overview(list(exc.report), "canary", ctx.name) if exc.report else "",
    ]
    create_markdown_artifact(
        key=artifact_key(ctx.name, "auto-rollback"),
        markdown="\n".join(lines),
        description=f"automatic rollback: {exc.gate} failed at {stage.percent:g}%",
    )


def check_switchable(ctx: RunContext, stage: SwitchWritesStage) -> None:
    """Before anyone is asked: the mapping must be reversible (renames only), so the old store
    can keep being written from the new one; otherwise a rollback after the switch would lose writes."""
    require_reversible(ctx.migration.mapping)


def run_switch_writes(ctx: RunContext, stage: SwitchWritesStage) -> Outcome:
    """After its precheck, gates and approval (the evaluator's): the fenced write switch."""
    switch = flips.switch_writes(ctx.store.engine, ctx.name, ctx.actor, ctx.lease)
    return Outcome(True, f"writes switched at {switch.at.isoformat()} (flag version {switch.version})")
