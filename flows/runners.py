"""How each kind of stage runs: the explicit table the evaluator reads (no registration by import).

Every stage type of ``shiftover.plan`` (table moves), ``shiftover.schema.plan`` (expand/contract)
and ``shiftover.routes.stages`` (route moves) has exactly one runner here; ``tests/core`` and
``tests/routes`` check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shiftover.flows.backfill import run_backfill
from shiftover.flows.cutover import check_switchable, run_canary_step, run_shadow_reads, run_switch_writes
from shiftover.flows.decommission import drop_due, run_archive, run_drop, run_stop_old_writes
from shiftover.flows.dual_write import rehearse_first, run_dual_write
from shiftover.flows.evaluate import StageRunner
from shiftover.flows.expand import SCHEMA_RUNNERS
from shiftover.flows.routes import ROUTE_RUNNERS
from shiftover.flows.validate import run_validate
from shiftover.plan import (
    ArchiveStage,
    BackfillStage,
    CanaryStep,
    DropStage,
    DualWriteStage,
    ShadowReadsStage,
    StopOldWritesStage,
    SwitchWritesStage,
    ValidateStage,
)

RUNNERS: Mapping[type[Any], StageRunner[Any]] = {
    DualWriteStage: StageRunner(run_dual_write, precheck=rehearse_first),
    BackfillStage: StageRunner(run_backfill),
    ValidateStage: StageRunner(run_validate),
    ShadowReadsStage: StageRunner(run_shadow_reads),
    CanaryStep: StageRunner(run_canary_step),
    SwitchWritesStage: StageRunner(run_switch_writes, precheck=check_switchable),
    StopOldWritesStage: StageRunner(run_stop_old_writes),
    ArchiveStage: StageRunner(run_archive),
    DropStage: StageRunner(run_drop, wait=drop_due),
    **SCHEMA_RUNNERS,  # expand/contract (shiftover.schema.plan)
    **ROUTE_RUNNERS,  # route moves (shiftover.routes.stages)
}
