"""The Prefect task that runs a stage's gates and publishes their report as artifacts."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiftover.checks.gate import DiffScope, GateContext, GateResult, run_gates
from shiftover.errors import GateError
from shiftover.migration import Migration
from shiftover.spec import GateSpec


@task(name="gates", cache_policy=NO_CACHE)
def check_gates(
    migration: Migration,
    stage: str,
    gates: tuple[GateSpec, ...] | None = None,
    *,
    changed_since: datetime | None = None,
    actor: str = "shiftover",
    step: str | None = None,
    heading: str = "",
) -> list[GateResult]:
    """Run the gates; publish every result (passed or not) before a blocking failure stops the flow.

    ``changed_since`` narrows the checksum gate to rows changed since then (when the table
    has an ``updated_at`` column; otherwise the whole table is compared). ``step`` names the
    report when one stage section runs several times (each canary step keeps its own), and
    ``heading`` says what the step was.
    """
    from shiftover.checks.report import publish_gate_results

    since = changed_since if changed_since is not None and _has_updated_at(migration) else None
    if changed_since is not None and since is None:
        heading += (
            " The checksum compared the whole table: the mapping has no `updated_at` column to find the rows "
            "written during the step."
        )
    ctx = GateContext(migration, stage, DiffScope(since=since), actor)
    try:
        results = run_gates(ctx, gates)
    except GateError as exc:
        publish_gate_results(list(exc.report or []), step or stage, migration.name, heading)
        raise
    publish_gate_results(results, step or stage, migration.name, heading)
    return results


def _has_updated_at(migration: Migration) -> bool:
    return any(c.source == "updated_at" for c in migration.mapping.columns)
