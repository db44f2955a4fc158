"""Trigger DDL: every insert, update and delete on the old table appends the row's
key to a changelog table (``so_changelog_<table>``) in the same transaction.

Only keys are recorded: the replay reads each key's current image from the old table, so the
changelog stays small and a replay of any suffix of it converges. An update that changes the
key logs the old key as a delete too. Each engine writes its own DDL
(``EngineDialect.capture_install_ddl`` in ``shiftover/engines/<engine>.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from shiftover.engines import EngineDialect, dialect_for
from shiftover.errors import CaptureError, UnsupportedEngineError

_MAX_NAME = 60  # below PostgreSQL's 63 and MySQL's 64


@dataclass(frozen=True)
class CaptureNames:
    table: str  # the captured table
    changelog: str
    trigger: str  # PostgreSQL: one trigger (and a function of the same name); others: _ins/_upd/_del
    schema: str | None = None

    @classmethod
    def of(cls, table: str, schema: str | None = None) -> CaptureNames:
        return cls(table, f"so_changelog_{table}"[:_MAX_NAME], f"so_capture_{table}"[: _MAX_NAME - 4], schema)


def quote(dialect: sa.Dialect, name: str) -> str:
    return dialect.identifier_preparer.quote(name)


def qualified(dialect: sa.Dialect, name: str, schema: str | None) -> str:
    return f"{quote(dialect, schema)}.{quote(dialect, name)}" if schema else quote(dialect, name)


def install_ddl(dialect: sa.Dialect, names: CaptureNames, key: Sequence[str]) -> list[str]:
    """Statements that create the changelog table and the triggers (idempotent where the engine allows)."""
    return _engine(dialect).capture_install_ddl(dialect, names, key)


def remove_ddl(dialect: sa.Dialect, names: CaptureNames, *, keep_changelog: bool = False) -> list[str]:
    """Statements that drop the triggers (and the changelog table unless kept)."""
    stmts = _engine(dialect).capture_remove_ddl(dialect, names)
    log = qualified(dialect, names.changelog, names.schema)
    return stmts if keep_changelog else [*stmts, f"DROP TABLE IF EXISTS {log}"]


def _engine(dialect: sa.Dialect) -> EngineDialect:
    try:
        return dialect_for(dialect)
    except UnsupportedEngineError as error:
        raise CaptureError(
            f"trigger capture does not support {error.name!r} (PostgreSQL, MySQL/MariaDB, SQLite do)"
        ) from None
