"""What every flow needs at its edge: who it acts as."""

from __future__ import annotations

from prefect.runtime import flow_run


def actor() -> str:
    """The audit log's 'who' for work done by this flow run."""
    name = flow_run.get_flow_name() or "flow"
    run = flow_run.get_name() or "local"
    return f"prefect:{name}/{run}"
