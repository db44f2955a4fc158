"""Gate results, the registry of gates by name, and running a stage's gates."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from shiftover.control import schema
from shiftover.control.store import utcnow
from shiftover.errors import GateError
from shiftover.migration import Migration
from shiftover.spec import GateSpec


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    summary: str  # one line a person can act on
    blocking: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)  # evidence: differing keys, failed expectations
    markdown: str = ""  # the longer report, rendered as a Prefect artifact
    metrics: dict[str, Any] = field(default_factory=dict)


GateFn = Callable[[Migration, GateSpec], GateResult]
GATES: dict[str, GateFn] = {}

# The stage whose gates are running, for gates that vary by stage (e.g. expectations per stage).
CURRENT_STAGE: ContextVar[str | None] = ContextVar("shiftover_gate_stage", default=None)


def gate(name: str) -> Callable[[GateFn], GateFn]:
    """Register a gate function under a spec gate name."""

    def register(fn: GateFn) -> GateFn:
        GATES[name] = fn
        return fn

    return register


def run_gate(migration: Migration, stage: str, spec: GateSpec) -> GateResult:
    """Run one gate and record its result; a blocking gate's verdict is kept as declared."""
    _load_builtin_gates()
    token = CURRENT_STAGE.set(stage)
    try:
        result = GATES[spec.name](migration, spec)
    finally:
        CURRENT_STAGE.reset(token)
    result = replace(result, blocking=spec.blocking)
    record_result(migration, stage, result)
    return result


def run_gates(migration: Migration, stage: str, gates: tuple[GateSpec, ...] | None = None) -> list[GateResult]:
    """Run a stage's gates in order; raise ``GateError`` at the first blocking failure."""
    results = []
    for spec in migration.spec.gates_for(stage) if gates is None else gates:
        result = run_gate(migration, stage, spec)
        results.append(result)
        if result.blocking and not result.passed:
            raise GateError(result.gate, result.summary, report=results)
    return results


def record_result(migration: Migration, stage: str, result: GateResult) -> None:
    with migration.store.engine.begin() as conn:
        conn.execute(
            schema.gate_results.insert().values(
                migration=migration.name,
                stage=stage,
                gate=result.gate,
                passed=result.passed,
                blocking=result.blocking,
                summary=result.summary,
                report={"rows": result.rows[:100], "metrics": result.metrics},
                at=utcnow(),
            )
        )


def _load_builtin_gates() -> None:
    # Importing the modules registers their gates; GX is imported lazily inside its gate.
    import checks.data
    import checks.traffic  # noqa: F401
