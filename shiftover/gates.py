"""The names of the gates a spec may declare: the one list both the spec's validation and the
registry of gate functions (``shiftover.checks.registry.GATES``) are held to. A test keeps the two equal."""

from __future__ import annotations

DATA_GATES = frozenset(
    {
        "row_count",  # row parity between source and target
        "checksum",  # per-segment checksum diff with bisection and repair
        "expectations",  # Great Expectations suite on the target
    }
)

TRAFFIC_GATES = frozenset(
    {
        "shadow_mismatch",  # shadow-read mismatch rate under a threshold
        "reconcile_drained",  # reconciliation queue empty
        "error_rate",  # dual-writer secondary error rate under a threshold
        "lag",  # a lag/load query under a threshold
    }
)

GATE_NAMES = DATA_GATES | TRAFFIC_GATES
