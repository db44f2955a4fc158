"""Every gate function by the name a spec gives it. The names are ``shiftover.gates.GATE_NAMES``
(the spec validates against them); a test keeps this mapping's keys equal to that set."""

from __future__ import annotations

from collections.abc import Mapping

from shiftover.checks.context import GateFn
from shiftover.checks.data import checksum_gate, expectations_gate, row_count_gate
from shiftover.checks.traffic import lag, reconcile_drained, secondary_error_rate, shadow_mismatch

GATES: Mapping[str, GateFn] = {
    "row_count": row_count_gate,
    "checksum": checksum_gate,
    "expectations": expectations_gate,
    "shadow_mismatch": shadow_mismatch,
    "reconcile_drained": reconcile_drained,
    "error_rate": secondary_error_rate,
    "lag": lag,
}
