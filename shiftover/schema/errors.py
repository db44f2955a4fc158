"""The errors of a schema change; they join the one tree under ``ShiftoverError``.

ShiftoverError
└── SchemaChangeError         an expand/contract step could not run (table, step, cause)
    ├── LockTimeoutError      a DDL statement never got its lock within the retries (statement, attempts,
    │                         what blocked it): nothing queued behind it for longer than one lock timeout
    ├── ColumnMismatchError   validation found rows whose new column is not ``up(old)`` (count, keys, query)
    ├── ConstraintViolationError  rows that a CHECK, NOT NULL or unique index would refuse, found before
    │                         any DDL (count, sample of keys or values, query)
    ├── ExpectationsFailedError  the spec's Great Expectations failed at validate (each one, what was observed)
    ├── CanaryStoppedError    shadow reads found new columns differing from ``up(old)`` at a canary
    │                         step of switch_reads (step, count, sample); the reads flag was put back
    ├── CanaryUnjudgedError   too few shadow reads at a canary step to judge it; the flag was put back
    ├── ContractRefusedError  a rollback or contract that would lose data or skip a step (why)
    ├── ColumnWriteError      a write through ``ColumnWrites`` refused, nothing written
    │   ├── WriteShapeError   the values are not in the shape the writes flag names (which columns)
    │   └── MissingSideError  the table lacks a side the write must fill (not expanded yet, or contracted)
    └── ConcurrentChangeError another unfinished change holds the table (its name and phase)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shiftover.errors import ShiftoverError


class SchemaChangeError(ShiftoverError):
    """A step of an expand/contract schema change failed."""


class LockTimeoutError(SchemaChangeError):
    def __init__(self, statement: str, attempts: int, blockers: Sequence[str]) -> None:
        self.statement = statement
        self.attempts = attempts
        self.blockers = tuple(blockers)
        held = "; ".join(self.blockers) or "unknown (the engine does not say)"
        super().__init__(
            f"no lock for `{statement}` after {attempts} attempt(s), each bounded by the lock timeout so "
            f"application queries never queued behind it for longer; held by: {held}. Finish or end those "
            "sessions, then run again (the step resumes)"
        )


class ColumnMismatchError(SchemaChangeError):
    def __init__(self, what: str, count: int, keys: Sequence[Any], query: str) -> None:
        self.what = what
        self.count = count
        self.keys = tuple(keys)
        self.query = query
        super().__init__(f"{what}: {count} row(s), first keys {list(self.keys)}; find them all with: {query}")


class OutOfStepError(SchemaChangeError):
    """``stop_sync`` refused before its DDL: rows whose old and new sides neither ``up`` nor ``down``
    connects (``shiftover.schema.validate.rows_out_of_step``)."""

    def __init__(self, what: str, count: int, keys: Sequence[Any], query: str) -> None:
        self.what = what
        self.count = count
        self.keys = tuple(keys)
        self.query = query
        super().__init__(
            f"stop_sync refused before its DDL, nothing changed (the change can still be rolled back): "
            f"{count} row(s) fail {what}, first keys {list(self.keys)}. They were written past the sync "
            "(a session with the sync triggers off, or under sync: application a write outside ColumnWrites); "
            "put each in step (write its right value to the new columns, through the sync triggers or "
            f"ColumnWrites, which set the old ones from it), then run again. List them all with: {query}"
        )


class ConstraintViolationError(SchemaChangeError):
    def __init__(self, what: str, count: int, sample: Sequence[Any], query: str, *, unit: str = "row(s)") -> None:
        self.what = what
        self.count = count
        self.keys = tuple(sample)
        self.query = query
        shown = "first values" if unit != "row(s)" else "first keys"
        super().__init__(
            f"refused before any DDL: {what}: {count} {unit}, {shown} {list(self.keys)}; fix them and run again "
            f"(list them all with: {query})"
        )


class ExpectationsFailedError(SchemaChangeError):
    def __init__(self, failed: Sequence[str]) -> None:
        self.failed = tuple(failed)
        super().__init__(
            f"{len(self.failed)} expectation(s) failed on the changed table: "
            + "; ".join(self.failed)
            + ". The run stopped at validate; fix the data or the spec, then run again (or roll back)"
        )


class CanaryStoppedError(SchemaChangeError):
    def __init__(
        self,
        percent: float,
        restored: Any,
        reads: int,
        mismatches: int,
        sample: Sequence[Mapping[str, Any]],
        *,
        errors: int = 0,
    ) -> None:
        self.percent = percent
        self.restored = restored
        self.mismatches = mismatches
        self.errors = errors
        self.sample = tuple(sample)
        shown = "; ".join(
            f"key {m['key_json']} {m['columns']}: up(old) {m['old_value']} vs new {m['new_value']}" for m in self.sample
        )
        unjudged = (
            f" and {errors} shadow error(s), reads whose comparison could not run (the application's log says why)"
            if errors
            else ""
        )
        super().__init__(
            f"switch_reads stopped at its {percent:g} % canary step: {mismatches} shadow mismatch(es) in {reads} "
            f"shadow read(s){unjudged} since the step began ({shown or 'no sample kept'}); the reads flag is back "
            f"to {restored}. Find why those rows' new columns differ from up(old) or cannot be compared, then run "
            "again (the canary starts from its first step)"
        )


class CanaryUnjudgedError(SchemaChangeError):
    def __init__(self, percent: float, restored: Any, reads: int, needed: int) -> None:
        self.percent = percent
        self.restored = restored
        self.reads = reads
        super().__init__(
            f"switch_reads stopped at its {percent:g} % canary step: {reads} shadow read(s) since the step began, "
            f"fewer than reads.min_shadow_reads ({needed}), so the step cannot be judged; the reads flag is back "
            f"to {restored}. Read through ColumnReads in the application (or lengthen reads.soak_seconds), "
            "or set reads.min_shadow_reads: 0 to pass steps without evidence"
        )


class ContractRefusedError(SchemaChangeError):
    """A step refused because it would lose data or skip what must come first."""


class ConcurrentChangeError(SchemaChangeError):
    def __init__(self, table: str, holding: Sequence[tuple[str, Any]]) -> None:
        self.table = table
        self.holding = tuple(holding)
        names = ", ".join(f"{name!r} (phase {phase})" for name, phase in self.holding)
        super().__init__(
            f"refused before anything was written: table {table} is held by the unfinished migration {names}; "
            "one unfinished migration per table (a schema change installs triggers and drops columns, a table "
            "move copies the columns it planned and ends by dropping the old table: either undoes the other's "
            "ground). Finish that migration or roll it back (shiftover rollback <its spec>), then run this one "
            "again"
        )


class ColumnWriteError(SchemaChangeError):
    """A write through ``ColumnWrites`` refused before anything was written."""


class WriteShapeError(ColumnWriteError):
    def __init__(self, table: str, writes_new: bool, unexpected: Sequence[str], missing: Sequence[str]) -> None:
        self.writes_new = writes_new
        self.unexpected = tuple(unexpected)
        self.missing = tuple(missing)
        side = "new" if writes_new else "old"
        problems = ([f"unexpected column(s) {list(self.unexpected)}"] if self.unexpected else []) + (
            [f"missing column(s) {list(self.missing)}"] if self.missing else []
        )
        super().__init__(
            f"write to {table} refused, nothing written: the writes flag says the {side} columns, and the values "
            f"have {' and '.join(problems)}. Pass the shape ColumnWrites.writes_new() names (it can change "
            "between two writes: read it again and retry)"
        )


class MissingSideError(ColumnWriteError):
    def __init__(self, table: str, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"write to {table} refused, nothing written: the table has no column(s) {list(self.missing)}, and "
            "ColumnWrites writes the old and the new columns together. Before expand (or after a rollback) the new "
            "columns are missing; after contract the old ones are (write the table directly then)"
        )
