"""Stage 3: prove the copy equal before any read moves: row parity, the checksum diff with
repair, and the Great Expectations suite. A failing blocking gate fails the flow with its
report (artifacts), and the migration stays ``backfilled``: no later stage runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger

from checks.data import queued_keys
from checks.gate import DiffScope, GateContext, GateResult
from checks.report import publish_gate_results
from flows.runtime import actor, require_phase
from shiftover.control.store import DEFAULT_URL
from shiftover.errors import GateError, SpecError
from shiftover.migration import load_migration
from shiftover.phases import Phase
from tasks.validate import run_validation_gate

STAGE = "validate"
VALIDATE_FROM = {Phase.BACKFILLED, Phase.VALIDATED}


@flow(name="validate")
def validate(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    since: str | None = None,
    keys_from_queue: bool = False,
) -> dict[str, Any]:
    """Run the spec's validate gates; advance to ``validated`` only when none blocks.

    ``since`` (ISO time) limits the checksum diff to rows updated since then;
    ``keys_from_queue`` limits it to the keys the reconciliation queue has touched.
    """
    migration = load_migration(spec_path, control_url)
    require_phase(migration.name, migration.store.phase(migration.name), VALIDATE_FROM, Phase.VALIDATED)
    scope = DiffScope(since=_parse_since(since), keys=queued_keys(migration) if keys_from_queue else None)
    ctx = GateContext(migration, STAGE, scope, actor())
    results: list[GateResult] = []
    for gate_spec in migration.spec.gates_for(STAGE):
        result = run_validation_gate(ctx, gate_spec)
        results.append(result)
        if result.blocking and not result.passed:
            publish_gate_results(results, STAGE, migration.name)
            raise GateError(result.gate, result.summary, report=results)
    publish_gate_results(results, STAGE, migration.name)
    reason = _reason(results)
    migration.store.advance_to(migration.name, Phase.VALIDATED, actor(), reason)
    get_run_logger().info("validation of %s: %s", migration.name, reason)
    return {
        "migration": migration.name,
        "phase": str(Phase.VALIDATED),
        "gates": [{"gate": r.gate, "passed": r.passed, "blocking": r.blocking, "summary": r.summary} for r in results],
    }


def _parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        return datetime.fromisoformat(since)
    except ValueError:
        raise SpecError("since", f"not an ISO date or time: {since!r}") from None


def _reason(results: list[GateResult]) -> str:
    return "; ".join(f"{r.gate}: {r.summary}" for r in results) or "no gates declared"
