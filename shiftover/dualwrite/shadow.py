"""Shadow-read comparison (GitHub Scientist's semantics): which columns of two row images differ.

A shadowed read runs against both stores, returns the primary's answer, and compares the two
in the target's shape (the old row passed through the mapping) by the diff's own column rules
(``diff.equality``), so a pair the diff calls equal is never a shadow mismatch, and the other
way round. Mismatches are recorded by the ``metrics.Recorder``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shiftover.diff.equality import differing_columns
from shiftover.diff.normalize import ColumnRule
from shiftover.spec import ValidationSpec


def compare_rows(
    rules: Sequence[ColumnRule],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    options: ValidationSpec,
) -> list[str] | None:
    """Columns that differ (``["*"]`` when one side is missing); None when equal."""
    if old is None and new is None:
        return None
    if old is None or new is None:
        return ["*"]
    return differing_columns(rules, old, new, options) or None
