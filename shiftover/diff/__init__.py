"""The diff engine: per-segment checksums inside each database, narrowing to the differing
rows, row-level comparison, repair from the source of truth, progress in the control store.

    normalize.py   canonical text per kind and engine (and its Python twin)
    rules.py       the rule per compared column, checked before any work
    segments.py    key ranges and their SQL predicates
    checksum.py    count + hash sum per range (and per bucket) inside each database
    bisect.py      narrowing a differing range to candidate keys
    rows.py        row images compared by key
    tables.py      diff_tables / diff_keys: the entry points
    repair.py      re-copy differing keys, audited, then re-check
    failures.py    so_diff_segments and so_validation_failures; validation_status
"""

from __future__ import annotations

from shiftover.diff.failures import (
    DiffProgress,
    ValidationStatus,
    new_run_id,
    unfinished_run,
    validation_status,
)
from shiftover.diff.repair import RepairResult, repair
from shiftover.diff.report import CHANGED, EXTRA, MISSING, Difference, DiffReport
from shiftover.diff.tables import diff_keys, diff_tables, plan_diff

__all__ = [
    "CHANGED",
    "EXTRA",
    "MISSING",
    "DiffProgress",
    "DiffReport",
    "Difference",
    "RepairResult",
    "ValidationStatus",
    "diff_keys",
    "diff_tables",
    "new_run_id",
    "plan_diff",
    "repair",
    "unfinished_run",
    "validation_status",
]
