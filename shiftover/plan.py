"""A migration's plan as data: the stages in order, each with its gates, its approval, the
phase it reaches and how it is undone. The end-to-end flow walks it; ``explain`` prints it
for ``shiftover plan`` without touching a database.
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftover.connect import redact
from shiftover.phases import IRREVERSIBLE, NEEDS_APPROVAL, Phase
from shiftover.spec import GateSpec, MigrationSpec


@dataclass(frozen=True)
class Stage:
    name: str
    flow: str  # the Prefect flow that runs it
    reaches: Phase
    does: str
    inverse: str  # how the step is undone ("" when it cannot be)
    gates: tuple[GateSpec, ...] = ()
    percent: float | None = None  # canary steps

    @property
    def needs_approval(self) -> bool:
        return self.reaches in NEEDS_APPROVAL

    @property
    def reversible(self) -> bool:
        return self.reaches not in IRREVERSIBLE


def build_plan(spec: MigrationSpec) -> list[Stage]:
    """Every stage of ``spec``'s migration, in the order they run."""
    src, dst = f"old {spec.source.table}", f"new {spec.target.table}"
    stages = [
        Stage(
            "dual_write",
            "dual-write",
            Phase.DUAL_WRITING,
            f"writes go to {src} (source of truth) then {dst}; failures queue for reconciliation",
            "writes flag -> old_only",
        ),
        Stage(
            "backfill",
            "backfill",
            Phase.BACKFILLED,
            f"copy {src} -> {dst} in key-range chunks of {spec.backfill.chunk_rows}, insert-if-absent, "
            f"{spec.backfill.concurrency} segment(s) in parallel, checkpointed",
            "nothing to undo: the old table is untouched",
            spec.gates_for("backfill"),
        ),
        Stage(
            "validate",
            "validate",
            Phase.VALIDATED,
            "count, checksum diff with bisection and repair, expectations on the target",
            "nothing to undo",
            spec.gates_for("validate"),
        ),
    ]
    if spec.canary.shadow_reads:
        stages.append(
            Stage(
                "shadow_reads",
                "cutover",
                Phase.SHADOW_READING,
                "reads served by the old store and compared with the new one",
                "shadow flag -> off",
            )
        )
    for pct in spec.canary.steps:
        reaches = Phase.READS_SWITCHED if pct == 100 else Phase.READS_CANARY
        stages.append(
            Stage(
                f"reads_{pct:g}pct",
                "cutover",
                reaches,
                f"{pct:g}% of reads (by key hash) served by {dst}, soak {spec.canary.soak_seconds:g}s",
                "reads flag -> 0%",
                spec.gates_for("canary"),
                percent=pct,
            )
        )
    stages += [
        Stage(
            "switch_writes",
            "cutover",
            Phase.WRITES_SWITCHED,
            f"{dst} becomes the source of truth; {src} is still written for rollback",
            "writes flag -> dual_old_primary",
            spec.gates_for("switch_writes"),
        ),
        Stage("stop_old_writes", "decommission", Phase.OLD_WRITES_STOPPED, f"{src} stops receiving writes", ""),
        Stage(
            "archive",
            "decommission",
            Phase.ARCHIVED,
            f"rename {src} to {spec.source.table}{spec.archive.suffix}"
            + (f", export Parquet to {spec.archive.export_parquet}" if spec.archive.export_parquet else "")
            + f", keep {spec.archive.retention_days:g} day(s)",
            "",
            spec.gates_for("decommission"),
        ),
        Stage("drop", "decommission", Phase.DECOMMISSIONED, f"drop {spec.source.table}{spec.archive.suffix}", ""),
    ]
    return stages


def explain(spec: MigrationSpec) -> str:
    """The plan as text: one numbered line a stage, its gates, approvals and inverse."""
    lines = [
        f"Migration {spec.name}: {spec.source.table} ({redact(spec.source.url)}) -> "
        f"{spec.target.table} ({redact(spec.target.url)})"
    ]
    for i, stage in enumerate(build_plan(spec), 1):
        marks = []
        if stage.needs_approval:
            marks.append("APPROVAL")
        if not stage.reversible:
            marks.append("IRREVERSIBLE")
        head = f"{i:>2}. {stage.name:<16} -> {stage.reaches:<18}" + (f" [{', '.join(marks)}]" if marks else "")
        lines.append(head)
        lines.append(f"      does: {stage.does}")
        if stage.gates:
            gates = ", ".join(g.name + ("" if g.blocking else " (warning)") for g in stage.gates)
            lines.append(f"      gates: {gates}")
        lines.append(f"      undo: {stage.inverse or 'cannot be undone'}")
    approvers = ", ".join(spec.approvals.approvers) or "anyone"
    lines.append(f"Approvals by {approvers}; time-out {spec.approvals.timeout_seconds:g}s fails safe.")
    return "\n".join(lines)


def explain_ddl(spec: MigrationSpec) -> str:
    """The DDL Shiftover would run for ``spec``, as text: the target table (when it would be
    created from the source schema) and the change-capture triggers. Reads schemas, writes nothing."""
    from shiftover.capture.changelog import capture_ddl
    from shiftover.connect import get_engine
    from shiftover.preflight import resolve_mapping

    parts = []
    if spec.backfill.create_target:
        from shiftover.backfill.typemap import target_ddl

        mapping = resolve_mapping(spec, require_target=False)
        parts += [
            "-- target table (backfill.create_target: created before dual-write if absent)",
            target_ddl(get_engine(spec.source.url), get_engine(spec.target.url), mapping) + ";",
        ]
    parts += [
        "-- trigger capture on the old table (for applications that cannot use the dual-writer)",
        capture_ddl(spec),
    ]
    return "\n".join(parts)
