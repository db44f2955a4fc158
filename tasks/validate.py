"""The Prefect task of the validate stage: one gate, run with the stage's diff scope."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiftover.checks.gate import GateContext, GateResult, run_gate
from shiftover.spec import GateSpec


@task(name="validation-gate", cache_policy=NO_CACHE, task_run_name="gate-{gate_spec.name}")
def run_validation_gate(ctx: GateContext, gate_spec: GateSpec) -> GateResult:
    """Run and record one gate (not retried: the checksum gate repairs, and a repair is audited)."""
    return run_gate(ctx, gate_spec)
