"""Shiftover's one exception tree. Every error carries its evidence and says what to do.

ShiftoverError
├── SpecError                 the spec file or its databases disagree (field, problem)
├── ControlStoreError         the control store is unreachable or at an unknown version
├── PhaseError                an illegal phase transition (from, to, allowed)
├── FlagError                 a flag write lost a version race or names an unknown flag
├── CopyError                 a backfill chunk failed (table, key range, cause)
│   └── TransientCopyError    a lost connection: retried with backoff
├── DiffError                 the diff cannot run as declared (column, fix)
├── GateError                 a blocking gate failed (the report)
├── ApprovalError             an approval was refused, malformed or timed out
├── CaptureError              trigger capture could not be installed or replayed
└── UnsupportedEngineError    a database other than PostgreSQL, MySQL/MariaDB or SQLite (name)
"""

from __future__ import annotations

from typing import Any


class ShiftoverError(Exception):
    """Base of every error Shiftover raises on purpose."""


class SpecError(ShiftoverError):
    """A spec that cannot run: names the field at fault and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"spec field {field!r}: {problem}")


class ControlStoreError(ShiftoverError):
    """The control store cannot be used."""


class PhaseError(ShiftoverError):
    """A phase transition that the lifecycle does not allow."""

    def __init__(self, migration: str, current: str, wanted: str, allowed: list[str]) -> None:
        self.migration = migration
        self.current = current = str(current)
        self.wanted = wanted = str(wanted)
        self.allowed = allowed = [str(a) for a in allowed]
        super().__init__(
            f"migration {migration!r} is {current!r} and cannot go to {wanted!r}; "
            f"allowed next: {', '.join(allowed) or 'none'}"
        )


class FlagError(ShiftoverError):
    """A flag write was refused."""


class CopyError(ShiftoverError):
    """A backfill chunk failed; committed chunks stay committed."""

    def __init__(self, table: str, key_range: str, cause: str) -> None:
        self.table = table
        self.key_range = key_range
        self.cause = cause
        super().__init__(f"copy of {table} {key_range} failed: {cause}")


class TransientCopyError(CopyError):
    """A copy failure worth retrying (lost connection, deadlock, timeout)."""


class DiffError(ShiftoverError):
    """The diff cannot run as declared."""


class GateError(ShiftoverError):
    """A blocking gate failed; ``report`` holds what it found."""

    def __init__(self, gate: str, summary: str, report: Any = None) -> None:
        self.gate = gate
        self.summary = summary
        self.report = report
        super().__init__(f"gate {gate!r} failed: {summary}")


class ApprovalError(ShiftoverError):
    """An approval that was refused, malformed, or never came."""


class CaptureError(ShiftoverError):
    """Trigger-based change capture failed."""


class UnsupportedEngineError(ShiftoverError):
    """A database Shiftover has no engine module for; ``name`` is SQLAlchemy's name of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Shiftover does not support {name!r} databases (PostgreSQL, MySQL/MariaDB and SQLite)")


def describe_error(exc: BaseException) -> str:
    """An error in one line, as logs and the control store keep it: its type and the first line
    of its message."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"
