"""Stage 4: shadow reads, canary read steps with a gate at each, then the write switch.

Walks the cutover stages of the plan. A failing gate during a canary step flips reads back
to the old store at once, records why, and fails the run; the write switch waits for an
approval and is fenced so two runs cannot both switch.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.runtime import actor, require_phase
from shiftover.approvals import request_approval
from shiftover.control.store import DEFAULT_URL
from shiftover.errors import GateError
from shiftover.flags.routing import Routing, WriteMode, read_routing
from shiftover.migration import Migration, load_migration
from shiftover.phases import Phase, is_at_least
from shiftover.plan import Stage, build_plan
from tasks import routing as flips
from tasks.gates import check_gates

CUTOVER_FROM = {Phase.VALIDATED, Phase.SHADOW_READING, Phase.READS_CANARY, Phase.READS_SWITCHED}


@flow(name="cutover")
def cutover(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    soak_seconds: float | None = None,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
) -> dict[str, object]:
    """Move reads step by step, then writes, to the new store."""
    migration = load_migration(spec_path, control_url)
    phase = migration.store.phase(migration.name)
    if is_at_least(phase, Phase.WRITES_SWITCHED):
        return {"phase": phase, "note": "writes already switched"}
    require_phase(migration.name, phase, CUTOVER_FROM, Phase.SHADOW_READING)
    soak = migration.spec.canary.soak_seconds if soak_seconds is None else soak_seconds
    for stage in (s for s in build_plan(migration.spec) if s.flow == "cutover"):
        routing = read_routing(migration.store.engine, migration.name)
        if stage_done(stage, migration.store.phase(migration.name), routing):
            continue
        if stage.name == "shadow_reads":
            flips.start_shadow_reads(control_url, migration.name, actor())
            migration.store.advance_to(migration.name, Phase.SHADOW_READING, actor(), "shadow reads on")
        elif stage.percent is not None:
            run_canary_step(migration, control_url, stage, soak)
        else:
            switch_writes_after_approval(migration, control_url, stage, approval_timeout_seconds,
                                         poll_interval_seconds, auto_approve)
    return {"phase": migration.store.phase(migration.name)}


def stage_done(stage: Stage, phase: Phase, routing: Routing) -> bool:
    """True when a re-run can skip ``stage`` (its effect is already in place)."""
    if stage.name == "shadow_reads":
        return is_at_least(phase, Phase.SHADOW_READING)
    if stage.percent is not None:
        return is_at_least(phase, Phase.READS_CANARY) and routing.reads_percent >= stage.percent
    return is_at_least(phase, Phase.WRITES_SWITCHED)


def run_canary_step(migration: Migration, control_url: str, stage: Stage, soak_seconds: float) -> None:
    """Raise reads to the step's percentage, soak, gate; on a failed gate flip reads back and fail."""
    assert stage.percent is not None
    flips.move_reads(control_url, migration.name, stage.percent, actor())
    migration.store.advance_to(migration.name, Phase.READS_CANARY, actor(), f"reads at {stage.percent:g}%")
    time.sleep(soak_seconds)
    try:
        check_gates(migration, "canary", stage.gates)
    except GateError as exc:
        flips.rollback_routing(control_url, migration.name, actor(), f"canary gate {exc.gate} failed at "
                               f"{stage.percent:g}%: {exc.summary}")
        migration.store.transition(migration.name, Phase.ROLLED_BACK, actor(), f"automatic rollback: {exc}")
        raise
    if stage.reaches is Phase.READS_SWITCHED:
        migration.store.advance_to(migration.name, Phase.READS_SWITCHED, actor(), "all reads on the new store")
    get_run_logger().info("reads at %g%% passed their gates", stage.percent)


def switch_writes_after_approval(
    migration: Migration,
    control_url: str,
    stage: Stage,
    timeout_seconds: float | None,
    poll_interval_seconds: int,
    auto_approve: bool,
) -> None:
    """Gate (queue drained, clean diff), approval, then the fenced write switch."""
    results = check_gates(migration, "switch_writes", stage.gates)
    summary = approval_summary(migration, stage, [f"- {r.gate}: {'passed' if r.passed else 'FAILED'} — {r.summary}"
                                                  for r in results])
    request_approval(
        migration.store, migration.name, stage.name, summary,
        approvers=migration.spec.approvals.approvers,
        timeout_seconds=timeout_seconds or migration.spec.approvals.timeout_seconds,
        poll_interval_seconds=poll_interval_seconds, auto_approve=auto_approve,
    )
    switch = flips.switch_writes(control_url, migration.name, actor())
    migration.store.advance_to(migration.name, Phase.WRITES_SWITCHED, actor(),
                               f"writes switched at {switch.at.isoformat()} (flag version {switch.version})")


def approval_summary(migration: Migration, stage: Stage, gate_lines: list[str]) -> str:
    """The markdown shown on the approval form: what will happen and what the gates found."""
    routing = read_routing(migration.store.engine, migration.name)
    lines = [
        f"## Approve `{stage.name}` for migration `{migration.name}`",
        "",
        f"**What happens:** {stage.does}.",
        f"**Undo:** {stage.inverse or 'this step cannot be undone'}.",
        f"**Now:** phase `{migration.store.phase(migration.name)}`, writes `{routing.writes}`, "
        f"reads {routing.reads_percent:g}% on the new store.",
        "",
        "### Gates",
        *(gate_lines or ["- (no gates at this step)"]),
        "",
        f"Type **{migration.name}** in *Confirm Name* to approve.",
    ]
    if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
        lines.insert(4, "**Note:** the new store is already the source of truth.")
    return "\n".join(lines)
