"""Shadow-read comparison (GitHub Scientist's semantics): which columns of two row images differ.

A shadowed read runs against both stores, returns the primary's answer, and compares the two
in the target's shape (the old row passed through the mapping). Mismatches are recorded by the
``metrics.Recorder`` with the key, the differing columns and both values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def normalise(value: Any) -> Any:
    """A value in a form that compares equal across drivers (Decimal vs float, tz-naive UTC)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)  # naive values are taken as UTC
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    return value


def _equal(a: Any, b: Any) -> bool:
    a, b = normalise(a), normalise(b)
    if (isinstance(a, float) and isinstance(b, float | int)) or (isinstance(b, float) and isinstance(a, int)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def compare_rows(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str] | None:
    """Columns that differ (``["*"]`` when one side is missing); None when equal."""
    if old is None and new is None:
        return None
    if old is None or new is None:
        return ["*"]
    differing = [c for c in old if c not in new or not _equal(old[c], new[c])]
    return differing or None
