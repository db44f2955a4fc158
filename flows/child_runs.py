"""Prefect child runs of a distributed run's workers (mode ``deployment``): start them through
``run_deployment``, read their states, and end the ones still running once the work is done.
The backfill's and the validation diff's parents watch the control store, not these states: a
run whose machine died stays Running on the server while its leases expire."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.schemas.objects import State


def launch_child_runs(deployment: str, parameters: dict[str, Any], n: int, name: str, round_: int) -> list[UUID]:
    """``n`` runs of ``deployment`` (subflows of this run), returned at once (``timeout=0``)."""
    from prefect.deployments import run_deployment

    runs = []
    for i in range(n):
        run = run_deployment(
            deployment,
            parameters=parameters,
            timeout=0,  # return at once; the parent watches the control store
            flow_run_name=f"{name}-r{round_}-{i}",
            tags=["shiftover", name],
        )
        runs.append(run.id)  # type: ignore[union-attr]  # sync context: a FlowRun, not a coroutine
    return runs


def flow_run_state(run_id: UUID) -> State | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def is_final(run_id: UUID) -> bool:
    state = flow_run_state(run_id)
    return state is not None and state.is_final()


def age_seconds(at: datetime) -> float:
    return (datetime.now(UTC) - at).total_seconds()


def all_gone(children: list[UUID], launched_at: float, grace: float, stalled: bool) -> bool:
    """Every child has ended, or every live one has been Running past ``grace`` while the work
    stalled (no live lease, no recent heartbeat): its process is gone."""
    states = [flow_run_state(c) for c in children]
    live = [s for s in states if s is None or not s.is_final()]
    # a child is surely up (or dead) once Running for longer than a worker takes to claim
    settled = all(s is not None and s.is_running() and age_seconds(s.timestamp) > grace for s in live)
    return not live or (settled and time.monotonic() - launched_at > grace and stalled)


def end_child_runs(children: list[UUID], *, grace: float, who: str) -> None:
    """Wait up to ``grace`` for the children to end on their own (nothing is left to claim), then
    cancel the rest: their process is gone (a dead machine's run stays Running) or hung."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    deadline = time.monotonic() + grace
    left = [c for c in children if not is_final(c)]
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = [c for c in left if not is_final(c)]
    with get_client(sync_client=True) as client:
        for run_id in left:
            client.set_flow_run_state(
                run_id,
                Cancelled(message=f"ended by the parent {who}: every segment is done and this run had not ended"),
                force=True,
            )
    if left:
        get_run_logger().warning("%s: cancelled %d child runs that had not ended: %s", who, len(left), left)
