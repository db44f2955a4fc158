"""The gate names the spec accepts and the gate functions the registry runs are the same set."""

from __future__ import annotations

from shiftover.checks.registry import GATES
from shiftover.gates import DATA_GATES, GATE_NAMES, TRAFFIC_GATES


def test_every_gate_name_has_a_function_and_every_function_a_name() -> None:
    assert set(GATES) == GATE_NAMES


def test_data_and_traffic_gates_live_in_their_modules() -> None:
    assert {n for n, fn in GATES.items() if fn.__module__ == "shiftover.checks.data"} == DATA_GATES
    assert {n for n, fn in GATES.items() if fn.__module__ == "shiftover.checks.traffic"} == TRAFFIC_GATES
