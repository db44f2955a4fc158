"""The Prefect task of the validate stage: one gate, run with the stage's diff scope."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from checks.data import DiffScope, diff_scope
from checks.gate import GateResult, run_gate
from shiftover.migration import Migration
from shiftover.spec import GateSpec


@task(name="validation-gate", cache_policy=NO_CACHE, task_run_name="gate-{gate_spec.name}")
def run_validation_gate(migration: Migration, stage: str, gate_spec: GateSpec, scope: DiffScope) -> GateResult:
    """Run and record one gate (not retried: the checksum gate repairs, and a repair is audited)."""
    with diff_scope(scope):
        return run_gate(migration, stage, gate_spec)
