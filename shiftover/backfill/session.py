"""Connections and statements for the copy loop: private sessions and SQL compiled for a driver."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection


class DedicatedConnection:
    """A driver connection taken out of the pool: session settings and temp tables die with it."""

    def __init__(self, engine: Engine) -> None:
        self._raw: PoolProxiedConnection = engine.raw_connection()
        self.driver: Any = self._raw.driver_connection
        self._raw.detach()

    def close(self) -> None:
        self._raw.close()


def dedicated_connection(engine: Engine) -> DedicatedConnection:
    return DedicatedConnection(engine)


class BorrowedConnection:
    """The driver connection under an open SQLAlchemy connection: a writer built on it leaves the
    transaction to its owner (never commits or rolls back), so the rehearsal can undo every write."""

    def __init__(self, conn: sa.Connection) -> None:
        self.driver: Any = conn.connection.driver_connection

    def close(self) -> None:
        """The owner closes it."""


Session = DedicatedConnection | BorrowedConnection


def quoted_names(engine: Engine, table: sa.Table, columns: Sequence[str]) -> tuple[str, str]:
    """The (schema-qualified) table and a column list, quoted for raw SQL on this engine's driver."""
    preparer = engine.dialect.identifier_preparer
    return preparer.format_table(table), ", ".join(preparer.quote(c) for c in columns)


def compile_query(statement: sa.Executable, engine: Engine) -> tuple[str, Any]:
    """SQL text and parameters in the engine driver's own paramstyle (for COPY and raw cursors)."""
    compiled = statement.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
    params = compiled.construct_params()
    processors = compiled._bind_processors
    values = {name: processors[name](v) if name in processors else v for name, v in params.items()}
    if compiled.positional:
        return str(compiled), tuple(values[name] for name in compiled.positiontup)
    return str(compiled), values
