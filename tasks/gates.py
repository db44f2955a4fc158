"""The Prefect task that runs a stage's gates and publishes their report as artifacts."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from checks.gate import GateResult, run_gates
from shiftover.errors import GateError
from shiftover.migration import Migration
from shiftover.spec import GateSpec


@task(name="gates", cache_policy=NO_CACHE)
def check_gates(migration: Migration, stage: str, gates: tuple[GateSpec, ...] | None = None) -> list[GateResult]:
    """Run the gates; publish every result (passed or not) before a blocking failure stops the flow."""
    from checks.report import publish_gate_results

    try:
        results = run_gates(migration, stage, gates)
    except GateError as exc:
        publish_gate_results(list(exc.report or []), stage, migration.name)
        raise
    publish_gate_results(results, stage, migration.name)
    return results
