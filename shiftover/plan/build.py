"""A spec becomes a plan: the table move's stages, in order, with their gates and approvals."""

from __future__ import annotations

from shiftover.flags.routing import WriteMode
from shiftover.phases import Phase
from shiftover.plan.stages import (
    ApprovalPolicy,
    ArchiveStage,
    BackfillStage,
    CanaryStep,
    DropStage,
    DualWriteStage,
    NothingToUndo,
    Plan,
    RoutingFlip,
    ShadowReadsStage,
    Stage,
    StopOldWritesStage,
    SwitchWritesStage,
    ValidateStage,
)
from shiftover.spec import GateSpec, MigrationSpec

DAY = 86_400.0


def build_plan(spec: MigrationSpec) -> Plan:
    """Every stage of ``spec``'s table move, in the order they run."""
    src, dst = f"old {spec.source.table}", f"new {spec.target.table}"
    stages: list[Stage] = [
        DualWriteStage(
            "dual_write",
            Phase.DUAL_WRITING,
            "first a rehearsal (sample rows copied and rolled back; any problem stops the run), then "
            f"writes go to {src} (source of truth) then {dst}; failures queue for reconciliation"
            + ("; the new table is created first if absent" if spec.backfill.create_target else ""),
            RoutingFlip(writes=WriteMode.OLD_ONLY),
            create_target=spec.backfill.create_target,
        ),
        BackfillStage(
            "backfill",
            Phase.BACKFILLED,
            f"copy {src} -> {dst} in key-range chunks of {spec.backfill.chunk_rows}, insert-if-absent, "
            f"{spec.backfill.concurrency} segment(s) in parallel, checkpointed",
            NothingToUndo("the old table is untouched"),
            spec.gates_for("backfill"),
            "backfill",
        ),
        ValidateStage(
            "validate",
            Phase.VALIDATED,
            "checksum diff with bisection and repair from the old store, counts, expectations on the new store",
            NothingToUndo("repairs only made the new store equal to the old one"),
            repair_first(spec.gates_for("validate")),
            "validate",
        ),
    ]
    if spec.canary.shadow_reads:
        stages.append(
            ShadowReadsStage(
                "shadow_reads",
                Phase.SHADOW_READING,
                "reads served by the old store and compared with the new one",
                RoutingFlip(shadow=False),
            )
        )
    stages += [_canary_step(spec, pct, dst) for pct in spec.canary.steps]
    stages += _switch_and_retire(spec, src, dst)
    return Plan(spec.name, tuple(stages))


def repair_first(gates: tuple[GateSpec, ...]) -> tuple[GateSpec, ...]:
    """The checksum gate (which repairs from the old store) before the others, whatever the declared
    order: a missing or extra row would otherwise stop ``row_count`` first, and repair never run."""
    return tuple(sorted(gates, key=lambda g: g.name != "checksum"))


def _canary_step(spec: MigrationSpec, pct: float, dst: str) -> CanaryStep:
    return CanaryStep(
        f"reads_{pct:g}pct",
        Phase.READS_SWITCHED if pct == 100 else Phase.READS_CANARY,
        f"{pct:g}% of reads (by key hash) served by {dst}, soak {spec.canary.soak_seconds:g}s while the gates watch",
        RoutingFlip(reads_percent=0),
        spec.gates_for("canary"),
        "canary",
        percent=pct,
        soak_seconds=spec.canary.soak_seconds,
    )


def _switch_and_retire(spec: MigrationSpec, src: str, dst: str) -> list[Stage]:
    archive = f"{spec.source.table}{spec.archive.suffix}"
    parquet = spec.archive.export_parquet
    return [
        SwitchWritesStage(
            "switch_writes",
            Phase.WRITES_SWITCHED,
            f"{dst} becomes the source of truth; {src} is still written, so a rollback loses nothing",
            RoutingFlip(writes=WriteMode.DUAL_OLD_PRIMARY, drain_to_old_first=True),
            spec.gates_for("switch_writes"),
            "switch_writes",
            ApprovalPolicy("the new store becomes the source of truth"),
        ),
        StopOldWritesStage(
            "stop_old_writes",
            Phase.OLD_WRITES_STOPPED,
            f"{src} stops receiving writes",
            None,
            approval=ApprovalPolicy("after this the old store falls behind: no rollback"),
        ),
        ArchiveStage(
            "archive",
            Phase.ARCHIVED,
            f"capture triggers removed, {src} renamed to {archive}"
            + (f", exported to Parquet in {parquet}" if parquet else ""),
            None,
            spec.gates_for("decommission"),
            "decommission",
            archive_table=archive,
            export_parquet=parquet,
        ),
        DropStage(
            "drop",
            Phase.DECOMMISSIONED,
            f"after {spec.archive.retention_days:g} day(s) of retention, drop {archive} and the routing flags",
            None,
            approval=ApprovalPolicy("the archive is dropped for good"),
            archive_table=archive,
            retention_seconds=spec.archive.retention_days * DAY,
        ),
    ]
