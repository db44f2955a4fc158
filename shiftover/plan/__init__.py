"""A migration's plan: typed stages (``stages``) built from the spec (``build``), read by the
evaluator in ``flows``, the explainer (``explain``) and the rollback, against the state the
control store holds (``state``)."""

from shiftover.plan.build import build_plan
from shiftover.plan.ddl import explain_ddl
from shiftover.plan.explain import explain, plan_data
from shiftover.plan.stages import (
    STAGE_TYPES,
    ApprovalPolicy,
    ArchiveStage,
    BackfillStage,
    CanaryStep,
    DropStage,
    DualWriteStage,
    MigrationState,
    NothingToUndo,
    Plan,
    RoutingFlip,
    ShadowReadsStage,
    Stage,
    StopOldWritesStage,
    SwitchWritesStage,
    ValidateStage,
)
from shiftover.plan.state import nothing_left, read_state

__all__ = [
    "STAGE_TYPES",
    "ApprovalPolicy",
    "ArchiveStage",
    "BackfillStage",
    "CanaryStep",
    "DropStage",
    "DualWriteStage",
    "MigrationState",
    "NothingToUndo",
    "Plan",
    "RoutingFlip",
    "ShadowReadsStage",
    "Stage",
    "StopOldWritesStage",
    "SwitchWritesStage",
    "ValidateStage",
    "build_plan",
    "explain",
    "explain_ddl",
    "plan_data",
    "nothing_left",
    "read_state",
]
