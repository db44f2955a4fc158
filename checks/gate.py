"""Running a stage's gates: each gate named in the spec is looked up in ``shiftover.checks.registry.GATES``,
run with a ``GateContext`` and its result recorded in the control store.

``GateContext``, ``DiffScope`` and ``GateResult`` live in ``shiftover.checks.context`` (the gate modules
import them from there) and are re-exported here for the callers."""

from __future__ import annotations

from dataclasses import replace

from shiftover.checks.context import DiffScope, GateContext, GateFn, GateResult
from shiftover.checks.registry import GATES
from shiftover.control import schema
from shiftover.control.store import utcnow
from shiftover.errors import GateError
from shiftover.spec import GateSpec

__all__ = ["DiffScope", "GateContext", "GateFn", "GateResult", "record_result", "run_gate", "run_gates"]


def run_gate(ctx: GateContext, spec: GateSpec) -> GateResult:
    """Run one gate and record its result; a blocking gate's verdict is kept as declared."""
    result = replace(GATES[spec.name](ctx, spec), blocking=spec.blocking)
    record_result(ctx, result)
    return result


def run_gates(ctx: GateContext, gates: tuple[GateSpec, ...] | None = None) -> list[GateResult]:
    """Run gates in order (``None``: the spec's gates for ``ctx.stage``); raise ``GateError``
    at the first blocking failure, carrying every result so far."""
    results = []
    for spec in ctx.migration.spec.gates_for(ctx.stage) if gates is None else gates:
        result = run_gate(ctx, spec)
        results.append(result)
        if result.blocking and not result.passed:
            raise GateError(result.gate, result.summary, report=results)
    return results


def record_result(ctx: GateContext, result: GateResult) -> None:
    migration = ctx.migration
    with migration.store.engine.begin() as conn:
        conn.execute(
            schema.gate_results.insert().values(
                migration=migration.name,
                stage=ctx.stage,
                gate=result.gate,
                passed=result.passed,
                blocking=result.blocking,
                summary=result.summary,
                report={"rows": result.rows[:100], "metrics": result.metrics},
                at=utcnow(),
            )
        )
