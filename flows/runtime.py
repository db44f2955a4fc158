"""What every flow needs at its edge: who it acts as, and the phase checks before it starts."""

from __future__ import annotations

from prefect.runtime import flow_run

from shiftover.errors import PhaseError
from shiftover.phases import Phase


def actor() -> str:
    """The audit log's 'who' for work done by this flow run."""
    name = flow_run.get_flow_name() or "flow"
    run = flow_run.get_name() or "local"
    return f"prefect:{name}/{run}"


def require_phase(migration: str, current: Phase, allowed: set[Phase], wanted: Phase) -> None:
    """Refuse to start a stage from a phase it cannot run in (nothing has been written yet)."""
    if current not in allowed:
        raise PhaseError(migration, current, wanted, sorted(allowed))
