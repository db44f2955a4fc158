"""Stage 4: shadow reads, canary read steps with gates watching each soak, then the write switch.

Walks the cutover stages of the plan. A failing gate during a canary step flips reads back
to the old store at once, records why (audit log and a report artifact) and fails the run;
the write switch waits for an approval and is fenced (queue drained, last diff clean,
compare-and-set on the writes flag) so two runs cannot both switch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from prefect import flow, get_run_logger

from checks.gate import GateContext, run_gates
from flows.runtime import actor, require_phase
from shiftover.approvals import request_approval
from shiftover.control.store import DEFAULT_URL, utcnow
from shiftover.errors import GateError
from shiftover.flags.routing import Routing, WriteMode, read_routing
from shiftover.migration import Migration, load_migration
from shiftover.phases import Phase, is_at_least
from shiftover.plan import Stage, build_plan
from shiftover.reconcile import require_reversible
from tasks import routing as flips
from tasks.gates import check_gates

CUTOVER_FROM = {Phase.VALIDATED, Phase.SHADOW_READING, Phase.READS_CANARY, Phase.READS_SWITCHED}
WATCH_SECONDS = 5.0  # how often the traffic gates are checked during a soak


@dataclass(frozen=True)
class ApprovalWait:
    """How a flow waits for its approvals, from the flow's parameters (time-out: the spec's when None)."""

    timeout_seconds: float | None
    poll_interval_seconds: int
    auto_approve: bool
    suspend: bool | None


@flow(name="cutover")
def cutover(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    soak_seconds: float | None = None,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
    watch_seconds: float = WATCH_SECONDS,
    suspend: bool | None = None,
) -> dict[str, object]:
    """Move reads step by step, then writes, to the new store.

    ``suspend`` waits for the approval with ``suspend_flow_run`` (default: when started from
    a deployment); the flow then re-runs from the top and skips the steps already done.
    """
    migration = load_migration(spec_path, control_url)
    phase = migration.store.phase(migration.name)
    if is_at_least(phase, Phase.WRITES_SWITCHED):
        return {"phase": phase, "note": "writes already switched"}
    require_phase(migration.name, phase, CUTOVER_FROM, Phase.SHADOW_READING)
    soak = migration.spec.canary.soak_seconds if soak_seconds is None else soak_seconds
    wait = ApprovalWait(approval_timeout_seconds, poll_interval_seconds, auto_approve, suspend)
    for stage in (s for s in build_plan(migration.spec) if s.flow == "cutover"):
        routing = read_routing(migration.store.engine, migration.name)
        if stage_done(stage, migration.store.phase(migration.name), routing):
            continue
        if stage.name == "shadow_reads":
            flips.start_shadow_reads(control_url, migration.name, actor())
            migration.store.advance_to(migration.name, Phase.SHADOW_READING, actor(), "shadow reads on")
        elif stage.percent is not None:
            run_canary_step(migration, control_url, stage, soak, watch_seconds)
        else:
            switch_writes_after_approval(migration, control_url, stage, wait)
    return {"phase": migration.store.phase(migration.name)}


def stage_done(stage: Stage, phase: Phase, routing: Routing) -> bool:
    """True when a re-run can skip ``stage`` (its effect is already in place)."""
    if stage.name == "shadow_reads":
        return is_at_least(phase, Phase.SHADOW_READING)
    if stage.percent is not None:
        return is_at_least(phase, Phase.READS_CANARY) and routing.reads_percent >= stage.percent
    return is_at_least(phase, Phase.WRITES_SWITCHED)


def run_canary_step(
    migration: Migration, control_url: str, stage: Stage, soak_seconds: float, watch_seconds: float = WATCH_SECONDS
) -> None:
    """Raise reads to the step's percentage, soak while the gates watch, then gate the step.

    The traffic gates run every ``watch_seconds`` during the soak; at its end every canary
    gate runs, the checksum one over the rows changed since the step began. The first
    blocking failure rolls reads back and fails the run.
    """
    assert stage.percent is not None
    started = utcnow()
    flips.move_reads(control_url, migration.name, stage.percent, actor())
    migration.store.advance_to(migration.name, Phase.READS_CANARY, actor(), f"reads at {stage.percent:g}%")
    try:
        watch_soak(migration, stage, soak_seconds, watch_seconds)
        check_gates(migration, "canary", stage.gates, changed_since=started, actor=actor())
    except GateError as exc:
        roll_back_canary(migration, control_url, stage, exc)
        raise
    if stage.reaches is Phase.READS_SWITCHED:
        migration.store.advance_to(migration.name, Phase.READS_SWITCHED, actor(), "all reads on the new store")
    get_run_logger().info("reads at %g%% passed their gates", stage.percent)


def watch_soak(migration: Migration, stage: Stage, soak_seconds: float, watch_seconds: float) -> None:
    """Hold the step for ``soak_seconds``, checking the traffic gates (all but the checksum) as it goes."""
    deadline = time.monotonic() + soak_seconds
    traffic = tuple(g for g in stage.gates if g.name != "checksum")
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, watch_seconds))
        if traffic and deadline - time.monotonic() > 0:
            run_gates(GateContext(migration, "canary", actor=actor()), traffic)


def roll_back_canary(migration: Migration, control_url: str, stage: Stage, exc: GateError) -> None:
    """Reads back to the old store, the reason audited and published, the migration rolled back."""
    why = f"canary gate {exc.gate} failed at {stage.percent:g}% of reads: {exc.summary}"
    at = flips.rollback_routing(control_url, migration.name, actor(), why)
    migration.store.audit(
        migration.name,
        actor(),
        "auto_rollback",
        {"step": stage.name, "gate": exc.gate, "summary": exc.summary, "flipped_at": at},
    )
    migration.store.transition(migration.name, Phase.ROLLED_BACK, actor(), f"automatic rollback: {why}")
    publish_rollback_report(migration, stage, exc, at)
    get_run_logger().error("automatic rollback: %s", why)


def publish_rollback_report(migration: Migration, stage: Stage, exc: GateError, at: datetime) -> None:
    from prefect.artifacts import create_markdown_artifact

    from checks.report import render_overview
    from shiftover.story import artifact_key

    lines = [
        f"# Automatic rollback of `{migration.name}`",
        "",
        f"- **step:** `{stage.name}` ({stage.percent:g}% of reads)",
        f"- **failed gate:** `{exc.gate}` — {exc.summary}",
        f"- **reads and writes back on the old store at:** {at.isoformat()}",
        f"- **phase now:** `{migration.store.phase(migration.name)}`",
        "",
        render_overview(list(exc.report), "canary", migration.name) if exc.report else "",
    ]
    create_markdown_artifact(
        key=artifact_key(migration.name, "auto-rollback"),
        markdown="\n".join(lines),
        description=f"automatic rollback: {exc.gate} failed at {stage.percent:g}%",
    )


def switch_writes_after_approval(migration: Migration, control_url: str, stage: Stage, wait: ApprovalWait) -> None:
    """Reversibility, gates (queue drained, clean diff), approval, then the fenced write switch.

    The mapping must be reversible (renames only) so the old store can keep being written
    from the new one: otherwise a rollback after the switch would lose writes.
    """
    require_reversible(migration.mapping)
    results = check_gates(migration, "switch_writes", stage.gates, actor=actor())
    approve_stage(
        migration, stage, [f"- {r.gate}: {'passed' if r.passed else 'FAILED'} — {r.summary}" for r in results], wait
    )
    switch = flips.switch_writes(control_url, migration.name, actor())
    migration.store.advance_to(
        migration.name,
        Phase.WRITES_SWITCHED,
        actor(),
        f"writes switched at {switch.at.isoformat()} (flag version {switch.version})",
    )


def approve_stage(migration: Migration, stage: Stage, gate_lines: list[str], wait: ApprovalWait) -> None:
    """Pause for the approval of ``stage`` by one of the spec's approvers."""
    request_approval(
        migration.store,
        migration.name,
        stage.name,
        approval_summary(migration, stage, gate_lines),
        approvers=migration.spec.approvals.approvers,
        timeout_seconds=wait.timeout_seconds or migration.spec.approvals.timeout_seconds,
        poll_interval_seconds=wait.poll_interval_seconds,
        auto_approve=wait.auto_approve,
        suspend=wait.suspend,
    )


def approval_summary(migration: Migration, stage: Stage, gate_lines: list[str]) -> str:
    """The markdown shown on the approval form: what will happen and what the gates found."""
    routing = read_routing(migration.store.engine, migration.name)
    lines = [
        f"## Approve `{stage.name}` for migration `{migration.name}`",
        "",
        f"**What happens:** {stage.does}.",
        f"**Undo:** {stage.inverse or 'this step cannot be undone'}.",
        (
            f"**Now:** phase `{migration.store.phase(migration.name)}`, writes `{routing.writes}`, "
            f"reads {routing.reads_percent:g}% on the new store."
        ),
        "",
        "### Gates",
        *(gate_lines or ["- (no gates at this step)"]),
        "",
        f"Type **{migration.name}** in *Confirm Name* to approve.",
    ]
    if not stage.reversible:
        lines.insert(4, "**This step is IRREVERSIBLE.**")
    if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
        lines.insert(4, "**Note:** the new store is already the source of truth.")
    return "\n".join(lines)
