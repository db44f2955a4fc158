"""DDL that never makes application queries queue behind it for longer than one lock timeout.

Each statement runs with its lock wait bounded (``SchemaDialect.begin_ddl``); when the bound is
hit the statement is abandoned (so whatever queued behind it proceeds), and retried after an
exponential backoff with jitter. After the last attempt a ``LockTimeoutError`` names who held the
lock. pgroll does the same on PostgreSQL (500 ms, backoff on 55P03). Where the server's bound is
coarser than the spec's (MariaDB: whole seconds), ``SchemaDialect.guard_lock_wait`` ends the wait
at the spec's bound, and an attempt it ended is retried like a lock timeout.
A dialect may let the commit release the locks before it is durable (``begin_ddl``), then wait
for durability with no lock held (``flush_ddl``).

``outside_transaction`` runs each statement on its own autocommit connection with a session-level
bound (``SchemaDialect.begin_session_ddl``): PostgreSQL's ``CREATE INDEX CONCURRENTLY`` refuses to
run in a transaction. ``before`` is asked, on each attempt's connection, for statements to run first
(a concurrent index build that failed or timed out leaves an INVALID index behind: it is dropped and
built again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.engines import run_literal
from shiftover.schema.engines import LockWaitGuard, schema_dialect
from shiftover.schema.errors import LockTimeoutError
from shiftover.schema.spec import LockSpec


@dataclass
class DdlReport:
    """What running a step's DDL took: statements run, lock timeouts met, seconds spent waiting."""

    statements: int = 0
    lock_timeouts: int = 0
    backoff_seconds: float = 0.0
    attempts: list[int] = field(default_factory=list)  # per statement group


def run_ddl(
    engine: Engine,
    statements: Sequence[str],
    lock: LockSpec,
    *,
    table: str,
    schema: str | None = None,
    report: DdlReport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    outside_transaction: bool = False,
    before: Callable[[sa.Connection], list[str]] | None = None,
    together: bool = False,
    hold_table: str | None = None,
) -> DdlReport:
    """Run ``statements`` each under the lock timeout, retried with backoff.

    On engines with transactional DDL the statements run together in one transaction (all or
    none); elsewhere each is retried on its own, which is why every statement is idempotent.
    ``together``: in one transaction also where the driver would commit each DDL statement alone
    but the server can hold them in one (SQLite: ``begin_transaction_sql``); MariaDB cannot (each
    DDL statement commits), and runs them one by one as ever, unless ``hold_table``.
    ``hold_table`` (a qualified table name): where DDL commits alone, the statements run as one group
    on one connection between the dialect's ``table_write_lock`` pair (MariaDB: ``LOCK TABLES ...
    WRITE`` and ``UNLOCK TABLES``), so no other session reads or writes the table between them; the
    lock's own wait is bounded and retried like any statement's, and a failed attempt releases it
    (``end_ddl``) before the whole group is retried. Where DDL is transactional it changes nothing.
    ``outside_transaction``: each statement alone, autocommitted (see the module's docstring)."""
    report = report or DdlReport()
    dialect = schema_dialect(engine)
    explicit = together and dialect.begin_transaction_sql is not None
    one = (dialect.transactional_ddl or explicit) and not outside_transaction
    groups = [list(statements)] if one else [[s] for s in statements]
    held = dialect.table_write_lock(hold_table) if hold_table is not None and not one else None
    if held is not None and statements:
        groups = [[held[0], *statements, held[1]]]
    opening = dialect.begin_transaction_sql if explicit and not dialect.transactional_ddl else None
    for group in groups:
        if group:
            _run_group(engine, group, lock, table, schema, report, sleep, outside_transaction, before, opening)
    return report


def _run_group(
    engine: Engine,
    group: list[str],
    lock: LockSpec,
    table: str,
    schema: str | None,
    report: DdlReport,
    sleep: Callable[[float], None],
    outside_transaction: bool = False,
    before: Callable[[sa.Connection], list[str]] | None = None,
    opening: str | None = None,
) -> None:
    dialect = schema_dialect(engine)
    autocommit = {"isolation_level": "AUTOCOMMIT"} if outside_transaction else {}
    running = [group[0]]  # the statement in flight: the one a lock timeout names
    for attempt in range(1, lock.attempts + 1):
        guard = LockWaitGuard()
        try:
            with engine.connect().execution_options(**autocommit) as conn:
                guard = dialect.guard_lock_wait(conn, lock.timeout_ms)
                _attempt(conn, group, lock, before, guard, outside_transaction, running, opening)
            report.statements += len(group)
            report.attempts.append(attempt)
            return
        except sa.exc.DBAPIError as error:
            if not (dialect.is_lock_timeout(error) or guard.fired):
                raise
            report.lock_timeouts += 1
            if attempt == lock.attempts:
                raise LockTimeoutError(
                    running[0].splitlines()[0][:120], attempt, _holders(engine, table, schema)
                ) from None
            pause = backoff_seconds(lock, attempt)
            report.backoff_seconds += pause
            sleep(pause)


def _attempt(
    conn: sa.Connection,
    group: list[str],
    lock: LockSpec,
    before: Callable[[sa.Connection], list[str]] | None,
    guard: LockWaitGuard,
    autocommit: bool,
    running: list[str],
    opening: str | None = None,
) -> None:
    """One try at ``group``: in one transaction, or each statement autocommitted (see the module's
    docstring), its lock waits bounded by the session setting and by ``guard``; ``running[0]`` is
    set to each statement as it starts. ``opening``: SQL that opens the transaction itself, run
    after the bound is set (SQLite's ``BEGIN IMMEDIATE`` waits for the write lock under it)."""
    dialect = schema_dialect(conn)
    begin, end = (
        (dialect.begin_session_ddl, dialect.end_session_ddl) if autocommit else (dialect.begin_ddl, dialect.end_ddl)
    )
    try:
        with nullcontext() if autocommit else conn.begin(), guard:
            begin(conn, lock.timeout_ms)
            if opening:
                running[0] = opening
                conn.exec_driver_sql(opening)
            for statement in [*(before(conn) if before else []), *group]:
                running[0] = statement
                run_literal(conn, statement)
        if not autocommit:
            dialect.flush_ddl(conn)  # committed, its locks released: now wait for it to be durable
    finally:
        end(conn)


def backoff_seconds(lock: LockSpec, attempt: int) -> float:
    """Exponential from ``backoff_ms``, capped at ``max_backoff_ms``, with up to 50% jitter."""
    base = min(lock.backoff_ms * 2 ** (attempt - 1), lock.max_backoff_ms) / 1000
    return float(base * (0.5 + random.random() / 2))


def _holders(engine: Engine, table: str, schema: str | None) -> list[str]:
    try:
        with engine.connect() as conn:
            return schema_dialect(engine).lock_holders(conn, table, schema)
    except sa.exc.DBAPIError:
        return []
