"""Prefect flow runs as a test (and the person at the UI) sees them: a flow called in a thread,
the run waiting for an approval, a run's state. Shared by the cutover, schema and routes tests
(their folders do not import one another)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID


class Background(threading.Thread):
    """A flow called in another thread; keeps its return value or the exception it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc


def paused_run(flow_name: str, timeout: float = 20.0) -> UUID:
    """Wait for a PAUSED run of ``flow_name`` (as a person would wait for the UI to show it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            if runs:
                return runs[0].id
            time.sleep(0.2)
    raise AssertionError(f"no paused {flow_name} run within {timeout}s")


def run_state(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state else "NONE"
