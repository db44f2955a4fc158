"""``switch_reads`` in canary steps: the reads flag moves through the spec's ``reads.canary_percent``.

Each step sets ``{"columns": "new", "percent": p, "shadow": true}`` (``ColumnReads`` buckets keys by
it and shadow-compares every read), waits ``soak_seconds``, then gates on the shadow mismatches and
shadow errors (comparisons that could not run) the applications' recorders wrote to the control
store since the step began: any at all puts the flag back where the previous step left it (the old
columns before the first) and fails the stage with the counts and a sample, so a re-run starts the
canary again from its first step. After the last step's gate the flag is ``{"columns": "new"}``, the
value a spec with no canary gets at once. The gate reads only what applications flushed: a soak
shorter than their flush interval sees nothing, and a step that saw fewer than
``reads.min_shadow_reads`` (default 1) shadow reads is not passed on no evidence: the flag goes back
the same way and the stage fails saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from shiftover.control.store import Fence, utcnow
from shiftover.flags.store import set_flag
from shiftover.metrics import mismatch_rate, recent_mismatches, shadow_errors
from shiftover.schema.errors import CanaryStoppedError, CanaryUnjudgedError
from shiftover.schema.plan import flag_key
from shiftover.schema.spec import ExpandContractSpec

ALL_NEW: dict[str, Any] = {"columns": "new"}
ALL_OLD: dict[str, Any] = {"columns": "old"}


def step_value(percent: float) -> dict[str, Any]:
    return {"columns": "new", "percent": percent, "shadow": True}


def canary_reads(
    store: Engine,
    spec: ExpandContractSpec,
    actor: str,
    *,
    fence: Fence | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, float]]:
    """Walk the canary steps; returns each step passed with the shadow reads its gate saw.
    ``CanaryStoppedError`` at the first step with a shadow mismatch, ``CanaryUnjudgedError`` at the
    first with too few shadow reads, the flag put back to the previous step's value first."""
    assert spec.reads is not None, "canary_reads needs the spec's reads field"
    key = flag_key(spec.name, "reads")
    previous: dict[str, Any] = ALL_OLD
    passed: list[dict[str, float]] = []
    for percent in spec.reads.canary_percent:
        since = utcnow()
        value = step_value(percent)
        set_flag(store, key, value, actor, migration=spec.name, reason=f"canary step {percent:g} %", fence=fence)
        sleep(spec.reads.soak_seconds)
        reads, mismatches = mismatch_rate(store, spec.name, since)
        errors = shadow_errors(store, spec.name, since)
        if mismatches or errors:
            sample = recent_mismatches(store, spec.name, since, limit=5)
            set_flag(store, key, previous, actor, migration=spec.name, reason="canary stopped", fence=fence)
            raise CanaryStoppedError(percent, previous, reads, mismatches, sample, errors=errors)
        if reads < spec.reads.min_shadow_reads:
            set_flag(store, key, previous, actor, migration=spec.name, reason="canary unjudged", fence=fence)
            raise CanaryUnjudgedError(percent, previous, int(reads), spec.reads.min_shadow_reads)
        passed.append({"percent": percent, "shadow_reads": reads})
        previous = value
    set_flag(store, key, ALL_NEW, actor, migration=spec.name, reason="canary done", fence=fence)
    return passed
