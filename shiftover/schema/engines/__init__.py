"""What a schema change needs from each engine, one module per engine (as ``shiftover/engines``).

A ``SchemaDialect`` spells the DDL of an expand/contract step (add and drop a column, the two-way
sync triggers, an index built online, a CHECK or NOT NULL added without a long lock), bounds each
statement's wait for its lock, and says whether an error was that bound being hit (so the statement
is retried after a backoff) and who held the lock. ``online_refusal`` names what an engine cannot
do online and what would block if it did: the preflight refuses such an operation before any DDL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa

from shiftover.engines import backend_name
from shiftover.errors import UnsupportedEngineError


@dataclass(frozen=True)
class SyncGroup:
    """Old columns and the new columns that replace them, kept in step by triggers (one old and one
    new for a change of type or name, one old and several new for a split, several old and one new
    for a merge); table and column names are quoted already.

    ``ups`` (one per new column) and ``downs`` (one per old column) are the spec's expressions
    evaluated over the row being written (``NEW``); ``trigger`` is the unquoted base name of the
    engine's trigger(s) (and PostgreSQL's function), ``schema_prefix`` the quoted schema and a dot, or
    empty. The preflight makes sure no ``up`` reads a new column of its group and no ``down`` an old
    one, so assigning one side column by column never changes what the next expression reads."""

    table: str
    key: tuple[str, ...]
    olds: tuple[str, ...]
    news: tuple[str, ...]
    ups: tuple[str, ...]
    downs: tuple[str, ...]
    trigger: str
    schema_prefix: str
    quote: Callable[[str], str]

    def trigger_name(self, suffix: str = "", *, qualified: bool = False) -> str:
        name = self.quote(f"{self.trigger}_{suffix}" if suffix else self.trigger)
        return f"{self.schema_prefix}{name}" if qualified else name


@dataclass(frozen=True)
class TableRename:
    """The names a ``rename_table`` uses, quoted: ``table`` and ``new_table`` qualified,
    ``old_name`` and ``new_name`` bare; ``staging`` and ``parked`` qualified names in Shiftover's
    own ``so_`` namespace for engines that build the view beside the table first. ``to`` and
    ``schema`` unquoted, for catalog lookups."""

    table: str
    new_table: str
    old_name: str
    new_name: str
    staging: str
    parked: str
    to: str
    schema: str | None


class LockWaitGuard:
    """A context manager around one DDL attempt; ``fired`` once it ended a lock wait itself (the
    statement then fails with the engine's interruption error, retried like a lock timeout)."""

    fired = False

    def __enter__(self) -> LockWaitGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class SchemaDialect:
    name = ""
    transactional_ddl = False  # PostgreSQL and SQLite: one step's statements commit together
    # SQL listing a table's trigger names (bind :t, the table), for the before/after snapshots
    trigger_names_sql = (
        "SELECT trigger_name FROM information_schema.triggers "
        "WHERE event_object_schema = database() AND event_object_table = :t ORDER BY 1"
    )

    def distinct(self, a: str, b: str) -> str:
        """SQL true when ``a`` and ``b`` differ, NULLs compared as values."""
        raise NotImplementedError

    def any_distinct(self, a: Sequence[str], b: Sequence[str]) -> str:
        """SQL true when any ``a[i]`` differs from ``b[i]`` (NULLs compared as values)."""
        return " OR ".join(f"({self.distinct(x, y)})" for x, y in zip(a, b, strict=True))

    def typed(self, value: str, type_: str) -> str:
        """``value`` as the SQL type ``type_`` (the preflight's stand-in for a column not added yet)."""
        return f"CAST({value} AS {type_})"

    def bound(self, param: str, type_: str) -> str:
        """A bound parameter standing for a column of SQL type ``type_`` in a derived row, typed as
        the column would type it (PostgreSQL would take an untyped parameter there for text)."""
        return self.typed(param, type_)

    def add_column(self, table: str, column: str, type_: str, default: str | None, timeout_ms: int) -> str:
        default_sql = f" DEFAULT {default}" if default is not None else ""
        return f"ALTER TABLE {table} ADD COLUMN {column} {type_} NULL{default_sql}"

    def drop_column(self, table: str, column: str, timeout_ms: int) -> str:
        return f"ALTER TABLE {table} DROP COLUMN {column}"

    # -- indexes and constraints (table, column and constraint names quoted by the caller) --------
    index_outside_transaction = False  # PostgreSQL: CREATE INDEX CONCURRENTLY refuses a transaction

    def online_refusal(self, op: str) -> str | None:
        """Why this engine cannot run operation ``op`` online (what would block), or None."""
        return None

    def create_index(self, table: str, name: str, columns: Sequence[str], unique: bool, timeout_ms: int) -> str:
        unique_sql = "UNIQUE " if unique else ""
        return f"CREATE {unique_sql}INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"

    def drop_index(self, table: str, name: str, timeout_ms: int) -> str:
        return f"DROP INDEX IF EXISTS {name}"

    def index_name_taken(self, conn: sa.Connection, table: str, name: str) -> bool:
        """True when ``name`` is taken where the engine scopes index names beyond the table (then
        ``CREATE INDEX IF NOT EXISTS`` would skip silently and a rollback drop someone else's)."""
        return False

    def invalid_index_cleanup(self, conn: sa.Connection, table: str, name: str) -> list[str]:
        """Statements that remove a half-built index ``name`` left by a failed online build."""
        return []

    def add_check(self, table: str, name: str, expression: str, timeout_ms: int) -> list[list[str]]:
        """Steps (each a list of statements run together) adding CHECK ``name``; the last validates it."""
        raise NotImplementedError

    def drop_check(self, table: str, name: str, timeout_ms: int) -> str:
        return f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"

    def set_not_null(
        self, conn: sa.Connection, table: str, column: str, helper: str, helper_exists: bool, timeout_ms: int
    ) -> list[list[str]]:
        """Steps making ``column`` NOT NULL; ``helper``: a CHECK name the engine may use on the way."""
        raise NotImplementedError

    def drop_not_null(self, conn: sa.Connection, table: str, column: str, helper: str, timeout_ms: int) -> list[str]:
        """Undo ``set_not_null`` (its helper CHECK too, where the engine uses one)."""
        raise NotImplementedError

    def make_nullable(self, conn: sa.Connection, table: str, column: str, timeout_ms: int) -> list[str]:
        """Statements letting ``column`` (NOT NULL now) take NULLs; empty where the engine cannot
        online (SQLite: only by rebuilding the table)."""
        return []

    def not_null_refusal(self, type_: str) -> str | None:
        """Why a column of ``type_`` cannot be made NOT NULL online here, or None."""
        return None

    foreign_key_needs_index = False  # MariaDB: else the ALTER builds one (left behind by a rollback)

    def add_foreign_key(
        self, table: str, name: str, columns: Sequence[str], ref_table: str, ref_columns: Sequence[str], timeout_ms: int
    ) -> list[list[str]]:
        """Steps adding foreign key ``name``; existing rows are checked by the caller too."""
        raise NotImplementedError

    def foreign_key_name_taken(self, conn: sa.Connection, name: str) -> bool:
        """True when ``name`` is taken by a foreign key of another table, where the engine scopes
        foreign key names beyond the table."""
        return False

    def drop_foreign_key(self, table: str, name: str, timeout_ms: int) -> str:
        return f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"

    def rename_table(self, names: TableRename) -> list[str]:
        """Rename the table to ``names.new_name`` and put a view of its old name in its place, with
        no moment in which the old name is missing."""
        raise NotImplementedError

    def drop_view(self, view: str) -> str:
        return f"DROP VIEW IF EXISTS {view}"

    def unrename_table(self, names: TableRename) -> list[str]:
        """Undo ``rename_table``: the view goes, the table gets its old name back (as gapless)."""
        raise NotImplementedError

    def rename_leftovers(self, conn: sa.Connection, names: TableRename) -> list[str]:
        """Statements dropping what a crash between ``rename_table``'s (or ``unrename_table``'s)
        statements may have left, where they do not commit together; nothing else."""
        return []

    def is_rename_placeholder(self, conn: sa.Connection, names: TableRename) -> bool:
        """True when ``names.to`` is the stand-in ``rename_table`` creates before its swap (a re-run
        after a crash takes it over; a rollback drops it)."""
        return False

    def begin_session_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        """``begin_ddl`` for an autocommit connection (no transaction to scope the setting to)."""
        self.begin_ddl(conn, timeout_ms)

    def end_session_ddl(self, conn: sa.Connection) -> None:
        self.end_ddl(conn)

    # -- a version schema: a view of the table as the new version sees it (``version_schema``) --------
    def current_schema(self, conn: sa.Connection) -> str:
        """The schema (MariaDB: database) an unqualified table name resolves to."""
        raise NotImplementedError

    def version_view(self, schema: str, view: str, table: str, columns: Sequence[str]) -> list[str]:
        """Create ``schema`` (quoted) if missing and the view ``view`` in it over ``table`` (both
        qualified), showing ``columns`` (quoted); replaced when it exists."""
        raise NotImplementedError

    def version_schema_exists(self, conn: sa.Connection, schema: str) -> bool:
        raise NotImplementedError

    def drop_version_view(self, conn: sa.Connection, schema: str, view: str, quote: Callable[[str], str]) -> list[str]:
        """Drop the view, then ``schema`` (unquoted) if nothing else is in it (someone's objects are left)."""
        raise NotImplementedError

    def ddl_mutex(self, engine: sa.Engine, schema: str | None, table: str) -> AbstractContextManager[None]:
        """A lock on ``table`` named as the server resolves it (default schema, case folding, the
        database file), so two spellings of one table share it, held while a run's stage checks its fence
        and runs its DDL, and while a rollback runs its own. The rollback fences the run off before
        it waits for the lock, so the run's DDL either ends before the rollback looks at the table or
        never starts: a rollback never undoes a stage that then goes on (triggers installed over
        columns already dropped would fail every write). Waits as long as the DDL in flight runs."""
        raise NotImplementedError

    def sync_install(self, group: SyncGroup) -> list[str]:
        raise NotImplementedError

    def sync_remove(self, group: SyncGroup) -> list[str]:
        raise NotImplementedError

    def trigger_names(self, pair_trigger: str) -> list[str]:
        """The unquoted names of the triggers ``sync_install`` creates."""
        raise NotImplementedError

    # -- forward-only sync: from stop_sync to drop_old_columns -------------------------------------
    # An application instance still on the old version (a pod not yet drained) writes the old
    # columns after stop_sync; a forward trigger (``<trigger>_fwd``) carries those writes to the new
    # columns (new = up(old)) until the old columns go. A write through the new columns no longer
    # touches the old ones. It honours the same ``sync_off`` switch as the two-way trigger.
    FORWARD = "fwd"

    def sync_forward_install(self, group: SyncGroup) -> list[str]:
        """Forward-only triggers for ``group`` (idempotent): an INSERT with every new column NULL
        and some old one not NULL sets new = up(old); an UPDATE changing an old column and no new
        one sets new = up(old); nothing else."""
        raise NotImplementedError

    def sync_forward_remove(self, group: SyncGroup) -> list[str]:
        raise NotImplementedError

    def sync_to_forward(self, group: SyncGroup) -> list[str]:
        """stop_sync's swap of the two-way triggers for the forward ones (idempotent). Here: the
        forward ones created first, the two-way ones dropped after, so there is no moment with
        neither; for a moment both run, which is harmless (old -> new they compute the same value,
        and a write to new still reaching old just keeps old in step)."""
        return self.sync_forward_install(group) + self.sync_remove(group)

    def forward_trigger_names(self, pair_trigger: str) -> list[str]:
        """The unquoted names of the triggers ``sync_forward_install`` creates."""
        raise NotImplementedError

    # SQL opening a transaction that DDL joins, where the driver would otherwise commit each DDL
    # statement alone (SQLite under pysqlite); ``run_ddl(..., together=True)`` runs it first
    begin_transaction_sql: str | None = None

    def table_write_lock(self, table: str) -> tuple[str, str] | None:
        """The statements taking and releasing a write lock on ``table`` that outlives the implicit
        commit of each DDL statement between them, where DDL is not transactional (``run_ddl``'s
        ``hold_table``); None where a transaction already holds a step's statements together."""
        return None

    def begin_ddl(self, conn: sa.Connection, timeout_ms: int) -> None:
        """Bound the lock wait of the DDL this connection runs next."""

    def flush_ddl(self, conn: sa.Connection) -> None:
        """Make the DDL just committed durable, where ``begin_ddl`` let its commit skip that wait
        (so the table's lock is released sooner)."""

    def end_ddl(self, conn: sa.Connection) -> None:
        """Undo ``begin_ddl`` on a pooled connection."""

    def guard_lock_wait(self, conn: sa.Connection, timeout_ms: int) -> LockWaitGuard:
        """Cuts the lock waits of what ``conn`` runs inside it at ``timeout_ms`` where the server's
        own bound cannot say it (MariaDB's is whole seconds); elsewhere it does nothing."""
        return LockWaitGuard()

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        raise NotImplementedError

    def lock_holders(self, conn: sa.Connection, table: str, schema: str | None) -> list[str]:
        """Sessions that may hold a lock on ``table``, one line each (best effort)."""
        return []

    def sync_off(self, conn: sa.Connection, *, session: bool = False) -> None:
        """Let this transaction's writes (with ``session``, the session's until ``sync_on``) skip the
        sync triggers (the column backfill writes both columns in step itself), where the engine has
        session variables. MariaDB's user variable lasts for the session either way."""

    def sync_on(self, conn: sa.Connection) -> None:
        """Undo ``sync_off``."""


def schema_dialect(x: sa.Engine | sa.Connection | sa.Dialect | str) -> SchemaDialect:
    name = backend_name(x)
    if name == "postgresql":
        from shiftover.schema.engines.postgresql import PostgresSchema

        return PostgresSchema()
    if name in ("mysql", "mariadb"):
        from shiftover.schema.engines.mysql import MySQLSchema

        return MySQLSchema()
    if name == "sqlite":
        from shiftover.schema.engines.sqlite import SQLiteSchema

        return SQLiteSchema()
    raise UnsupportedEngineError(name)


def held(conn: sa.Connection, take: str, release: str, params: Mapping[str, object]) -> Iterator[None]:
    """Take a session lock on ``conn`` with ``take`` (true once held), hold it, release it."""
    if not conn.exec_driver_sql(take, params).scalar():
        raise RuntimeError(f"could not take the schema change's DDL lock ({take})")
    try:
        yield
    finally:
        conn.exec_driver_sql(release, params)


def all_null(columns: Sequence[str], row: str = "NEW") -> str:
    return " AND ".join(f"{row}.{c} IS NULL" for c in columns)


def any_not_null(columns: Sequence[str], row: str = "NEW") -> str:
    return " OR ".join(f"{row}.{c} IS NOT NULL" for c in columns)


def on_row(columns: Sequence[str], row: str) -> list[str]:
    return [f"{row}.{c}" for c in columns]


def over_row(expr: str, columns: Sequence[str], row: str = "NEW") -> str:
    """``expr`` (written over the table's column names) evaluated over the trigger's row: a
    one-row derived table names each column after its ``NEW`` value, so the spec's expression is
    used as written, never rewritten by text substitution. ``columns`` are quoted."""
    return over_values(expr, [(c, f"{row}.{c}") for c in columns])


def over_values(expr: str, values: Sequence[tuple[str, str]]) -> str:
    """``expr`` evaluated over a one-row derived table naming each column (quoted) after its SQL
    value: ``over_row``'s rewriting, over any values (``ColumnWrites``: bound parameters). A column
    the row does not name resolves, as SQL scoping does, to the enclosing statement's (an UPDATE's
    stored row)."""
    fields = ", ".join(f"{v} AS {c}" for c, v in values)
    return f"(SELECT {expr} FROM (SELECT {fields}) AS so_row)"
