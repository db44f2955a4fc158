"""An expand/contract spec becomes a plan: typed stages the one evaluator (``flows/evaluate``) runs.

expand (new columns, then indexes built online) -> sync both ways -> backfill the column -> validate
-> constrain (CHECKs and NOT NULLs, only when the spec has any) -> switch reads -> switch writes ->
(approval) stop syncing -> (approval) drop the old columns. Why indexes go with expand and
constraints after validate: ``shiftover.schema.constraints``. The lifecycle's phases are the table
move's, reached in the same order (expand/contract keeps no archive: the last stage passes through
``archived`` on its way to ``decommissioned``). Every stage before ``stop_sync`` is undone by the
schema change's rollback (``SchemaUndo``); the last two cannot be undone and ask a person first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shiftover.phases import ORDER, Phase
from shiftover.plan.stages import ApprovalPolicy, MigrationState, Plan, SchemaUndo, Stage
from shiftover.schema.columns import dropped_columns
from shiftover.schema.spec import AddCheck, AddForeignKey, ConstraintOperation, ExpandContractSpec

FLOW = "expand-contract"
UNDO_EXPANSION = SchemaUndo("sync triggers and new columns dropped; the old columns hold every write")


def is_past(current: Phase, phase: Phase) -> bool:
    """Strictly later in the forward order (rolled_back never is)."""
    return current in ORDER and phase in ORDER and ORDER.index(current) > ORDER.index(phase)


@dataclass(frozen=True)
class SchemaStage(Stage):
    """A stage of a schema change. Done when recorded since the last rollback or when the lifecycle
    is past its phase: ``expand`` reaches ``planned`` (it only records itself), so reaching a phase
    is not enough."""

    flow: ClassVar[str] = FLOW

    def done(self, state: MigrationState) -> bool:
        return self.name in state.completed or is_past(state.phase, self.reaches)


@dataclass(frozen=True)
class ExpandColumnsStage(SchemaStage):
    kind: ClassVar[str] = "expand_columns"


@dataclass(frozen=True)
class SyncColumnsStage(SchemaStage):
    kind: ClassVar[str] = "sync_columns"


@dataclass(frozen=True)
class BackfillColumnsStage(SchemaStage):
    kind: ClassVar[str] = "backfill_columns"


@dataclass(frozen=True)
class ValidateColumnsStage(SchemaStage):
    kind: ClassVar[str] = "validate_columns"


@dataclass(frozen=True)
class ConstrainStage(SchemaStage):
    """CHECKs and NOT NULLs, enforced on every write from here on; reaches ``validated`` again (it
    follows validate), so it is done only once recorded or once reads switched."""

    kind: ClassVar[str] = "constrain"


@dataclass(frozen=True)
class SwitchColumnsStage(SchemaStage):
    """Flip the flag applications read (``reads``) or write (``writes``) the columns by."""

    kind: ClassVar[str] = "switch_columns"
    flag: str = "reads"


@dataclass(frozen=True)
class StopSyncStage(SchemaStage):
    kind: ClassVar[str] = "stop_sync"


@dataclass(frozen=True)
class DropOldColumnsStage(SchemaStage):
    kind: ClassVar[str] = "drop_old_columns"
    retention_seconds: float = 0.0  # after stop_sync, before this stage may run


SCHEMA_STAGE_TYPES: tuple[type[Stage], ...] = (
    ExpandColumnsStage,
    SyncColumnsStage,
    BackfillColumnsStage,
    ValidateColumnsStage,
    ConstrainStage,
    SwitchColumnsStage,
    StopSyncStage,
    DropOldColumnsStage,
)


def flag_key(spec_name: str, flag: str) -> str:
    """The flag applications read to know which columns to read (``reads``) or write (``writes``):
    ``{"columns": "old" | "new"}``."""
    return f"{spec_name}:schema.{flag}"


def build_schema_plan(spec: ExpandContractSpec) -> Plan:
    table = spec.database.table
    pairs = (
        ", ".join(
            f"{', '.join(m.old_names)} -> {', '.join(f'{n.name} ({n.type})' for n in m.news)}" for m in spec.moves
        )
        or "(none)"
    )
    added = ", ".join(f"{a.column} {a.type}" for a in spec.additions)
    olds = ", ".join(name for m in spec.moves for name in m.old_names) or "(none)"
    dropped = ", ".join(dropped_columns(spec)) or "(none)"
    renamed_to = (
        f"; rename {table} to {spec.rename.to} and put a view named {table} over it in its place, never leaving "
        f"{table} missing"
        if spec.rename
        else ""
    )
    indexes = "; ".join(
        f"build {'unique ' if i.unique else ''}index {i.name} ({', '.join(i.columns)}) online" for i in spec.indexes
    )
    checks = "; ".join(_describe(op) for op in spec.constraints)
    lock = f"each DDL waits at most {spec.lock.timeout_ms} ms for its lock, {spec.lock.attempts} attempts with backoff"
    stages: list[Stage] = [
        ExpandColumnsStage(
            "expand",
            Phase.PLANNED,
            f"add to {table}, nullable: {pairs}"
            + (f"; add {added}" if added else "")
            + (f"; {indexes}" if indexes else "")
            + renamed_to
            + f"; {lock}",
            UNDO_EXPANSION,
        ),
        SyncColumnsStage(
            "sync",
            Phase.DUAL_WRITING,
            "triggers keep old and new in step both ways: a write to old sets new = up(old), a write to new "
            "sets old = down(new); a pair already in step is left alone (no recursion)"
            if spec.sync == "triggers"
            else "sync: application, no triggers: only writes through ColumnWrites keep old and new in step (each "
            "sets new = up(old) or old = down(new) in its own statement); rows other writers change before validate "
            "are put in step by the validate stage first (and counted), later ones by nothing",
            UNDO_EXPANSION,
        ),
        BackfillColumnsStage(
            "backfill",
            Phase.BACKFILLED,
            f"UPDATE {table} SET new = up(old) in key batches of {spec.backfill.chunk_rows}, only rows out of step, "
            "checkpointed and throttled",
            UNDO_EXPANSION,
        ),
        ValidateColumnsStage(
            "validate",
            Phase.VALIDATED,
            "in the database: new = up(old) on every row"
            + (
                ", and down(up(old)) = old where an operation claims to be reversible"
                if any(m.reversible for m in spec.moves)
                else ""
            ),
            UNDO_EXPANSION,
        ),
        *(
            [
                ConstrainStage(
                    "constrain",
                    Phase.VALIDATED,
                    f"{checks}: violating rows counted first (refused with a sample of keys), then added "
                    "without a long lock (NOT VALID, then VALIDATE where the engine has it)",
                    SchemaUndo("constraints dropped, NOT NULL columns nullable again"),
                )
            ]
            if spec.constraints
            else []
        ),
        SwitchColumnsStage(
            "switch_reads",
            Phase.READS_SWITCHED,
            f"flag {flag_key(spec.name, 'reads')} -> new columns" + _canary(spec),
            SchemaUndo("reads flag -> old columns"),
            flag="reads",
        ),
        SwitchColumnsStage(
            "switch_writes",
            Phase.WRITES_SWITCHED,
            f"flag {flag_key(spec.name, 'writes')} -> new columns; "
            + ("the triggers" if spec.sync == "triggers" else "ColumnWrites")
            + f" still keep {olds} written",
            SchemaUndo("writes flag -> old columns"),
            flag="writes",
        ),
        StopSyncStage(
            "stop_sync",
            Phase.OLD_WRITES_STOPPED,
            "first every row proved in step (new = up(old) or old = down(new)), then "
            + (
                "the two-way sync triggers swapped for forward-only ones (a write to the old columns by an "
                "instance still on the old version still sets new = up(old), until drop_old_columns)"
                if spec.sync == "triggers"
                else "no sync triggers to drop (sync: application)"
            )
            + f": from here on, writes through the new columns no longer reach {olds}; first, a NOT NULL among the "
            "columns contract drops that has no default is made nullable, so inserts through the new columns "
            "alone are accepted",
            None,
            approval=ApprovalPolicy("after this the old columns fall behind: no rollback"),
        ),
        DropOldColumnsStage(
            "drop_old_columns",
            Phase.DECOMMISSIONED,
            f"after {spec.retention_hours:g} hour(s) of retention, "
            + (f"drop the view {table} (the old name)" if spec.rename else f"drop {dropped} from {table}"),
            None,
            approval=ApprovalPolicy("the old columns are dropped for good"),
            retention_seconds=spec.retention_hours * 3600,
        ),
    ]
    return Plan(spec.name, tuple(stages))


def _canary(spec: ExpandContractSpec) -> str:
    if spec.reads is None:
        return ""
    steps = ", ".join(f"{p:g}" for p in spec.reads.canary_percent)
    return (
        f" in canary steps of {steps} % of keys with shadow reads, {spec.reads.soak_seconds:g} s each; a shadow "
        "mismatch during a step puts the flag back to the previous step and stops"
    )


def _describe(op: ConstraintOperation) -> str:
    if isinstance(op, AddCheck):
        return f"check {op.name}: {op.expression}"
    if isinstance(op, AddForeignKey):
        return f"foreign key {op.name}: ({', '.join(op.columns)}) -> {op.ref_table} ({', '.join(op.ref_columns)})"
    return f"{op.column} NOT NULL"


def schema_plan_data(spec: ExpandContractSpec) -> dict[str, object]:
    """``shiftover plan --json`` for a schema change: the fields ``explain_schema_change`` prints."""
    stages = [
        {
            "name": s.name,
            "kind": s.kind,
            "reaches": str(s.reaches),
            "does": s.does,
            "approval": s.approval.why if s.approval is not None else None,
            "reversible": s.reversible,
            "undo": s.inverse.describe() if s.inverse else None,
        }
        for s in build_schema_plan(spec)
    ]
    return {"name": spec.name, "kind": "expand_contract", "table": spec.database.table, "stages": stages}


def explain_schema_change(spec: ExpandContractSpec, plan: Plan | None = None) -> str:
    """``shiftover plan`` for a schema change: the same stage lines as a table move's."""
    from shiftover.connect import redact
    from shiftover.plan.explain import explain_stage

    plan = plan or build_schema_plan(spec)
    lines = [f"Schema change {spec.name}: table {spec.database.table} in place ({redact(spec.database.url)})"]
    for i, stage in enumerate(plan, 1):
        lines += explain_stage(i, stage)
    approvers = ", ".join(spec.approvals.approvers) or "anyone"
    lines.append(f"Approvals by {approvers}; time-out {spec.approvals.timeout_seconds:g}s fails safe.")
    return "\n".join(lines)
