"""One module per database engine: every place where Shiftover's SQL, sessions or drivers differ.

``dialect_for(x)`` takes an engine, a connection, a SQLAlchemy dialect or a URL and returns its
``EngineDialect``: ``postgresql.PostgreSQL``, ``mysql.MySQL`` (MySQL and MariaDB alike: SQLAlchemy
names a ``mariadb+pymysql://`` URL's dialect "mariadb", a ``mysql+pymysql://`` one "mysql") or
``sqlite.SQLite``. The rest of the package asks the dialect what it needs (a capability, a piece of
SQL, a writer) and never compares dialect names; ``tests/core/test_engine_layer.py`` keeps it so.

The engine modules are imported on the first ``dialect_for`` call, not here: they build on
``diff.normalize``, ``capture.triggers`` and the backfill writers, which themselves ask
``dialect_for``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from shiftover.errors import UnsupportedEngineError

if TYPE_CHECKING:
    from shiftover.capture.triggers import CaptureNames
    from shiftover.diff.checksum import Side
    from shiftover.diff.normalize import ColumnRule
    from shiftover.mapping import TableMapping
    from shiftover.spec import ValidationSpec

Key = tuple[Any, ...]
Convert = Callable[[Any], Any]
Stats = tuple[Any, Any, int | None]  # (row estimate, byte estimate, max packet), raw from the engine


class EngineDialect:
    """What one engine does its own way. Subclasses set the flags and override the methods."""

    name: str = ""  # the module's engine: "postgresql", "mysql" or "sqlite"
    names: frozenset[str] = frozenset()  # SQLAlchemy dialect (and URL backend) names it serves
    bare_driver: str | None = None  # the driver a URL without one gets ("postgresql://" -> psycopg)

    # -- capabilities, read where the engine-neutral code decides -------------------------
    row_value_compare = False  # indexes (a, b) > (x, y): keyset ranges use it for composite keys
    client_side_autocommit = False  # switching autocommit costs no round trip (dualwrite.image)
    update_returning = False  # UPDATE/DELETE ... RETURNING gives the row image (dualwrite.writer)
    copy_target = False  # takes COPY data streamed from a source (backfill.sources)
    timezone_aware = False  # a tz-aware column takes aware datetimes (others get naive UTC)
    strict_booleans = False  # booleans and integers are distinct types (no 0/1 for a boolean)
    adapts_uuid_and_buffers = False  # the driver takes uuid.UUID and memoryview values
    int_div = "/"  # integer division in SQL
    native_text = "{}"  # the engine's own text of a value (a same-engine, same-type pair)
    native_kinds: frozenset[str] = frozenset()  # kinds whose own text is canonical enough
    segment_rows: int | None = None  # rows per diff segment, if not diff.tables.SEGMENT_ROWS
    renders_by_declared_type = False  # canonical_sql trusts the declared type (DATETIME(0): no fraction)
    max_identifier: int | None = None  # the longest table or column name the engine keeps whole
    casts_json_binds = True  # JSON written from text is CAST to the column's JSON type (mapping.JsonText)
    shared_store = True  # a control store several machines can share (distributed backfill leases)

    def store_clock(self) -> sa.ColumnElement[float]:
        """The server's clock in seconds since the epoch, fixed for one statement: the shared
        backfill budget (``backfill.budget``) keeps time by it, never by a worker's clock."""
        raise NotImplementedError

    def identifier_length(self, name: str) -> int:
        """A name's length as the engine counts it against ``max_identifier``."""
        return len(name.encode())

    def __repr__(self) -> str:
        return f"<EngineDialect {self.name}>"

    # -- connections ------------------------------------------------------------------------
    def normalise_url(self, url: URL) -> URL:
        """Pin the driver Shiftover ships with when the URL names none."""
        return url.set(drivername=self.bare_driver) if self.bare_driver and "+" not in url.drivername else url

    def absolute_url(self, url: URL) -> URL:
        """``url`` naming the same database from any working directory (a server's URL already does)."""
        return url

    def may_exist(self, url: URL) -> bool:
        """False only when ``url``'s database certainly does not exist yet (a server's may: ask it)."""
        return True

    def create_engine(self, url: URL) -> Engine:
        """A pooled engine for a server database."""
        return sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)

    @contextlib.contextmanager
    def utc_session(self, conn: sa.Connection) -> Iterator[None]:
        """Timestamps read in UTC on ``conn`` for the block (what the backfill writers assume)."""
        yield

    def prepare_hash_session(self, conn: sa.Connection) -> None:
        """Ready ``conn`` for the diff's hashing SQL (functions, time zone, limits)."""

    def begin_undoable(self, conn: sa.Connection) -> None:
        """Open a transaction on ``conn`` that driver-level writes and savepoints stay inside (the rehearsal)."""

    # -- rows -------------------------------------------------------------------------------
    def upsert(self, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> sa.Executable:
        """An INSERT that overwrites any row with the same key."""
        raise NotImplementedError

    def read_stats(self, conn: sa.Connection, table: sa.Table) -> Stats:
        """The engine's own size estimates of ``table`` (no scan); Nones where it keeps none."""
        return None, None, None

    def sample_keys(self, engine: Engine, table: sa.Table, key: Sequence[str], total: int, wanted: int) -> list[Key]:
        """About ``wanted`` of ``total`` keys at random, sorted by the database (its collation)."""
        raise NotImplementedError

    # -- backfill ---------------------------------------------------------------------------
    def bulk_writer(self, engine: Engine, mapping: TableMapping, table: sa.Table, session: Any = None) -> Any:
        """The insert-if-absent writer of this engine (``backfill/<engine>.py``); on a borrowed
        ``session`` it writes inside its owner's transaction and never commits (the rehearsal)."""
        raise NotImplementedError

    def copy_stream(self) -> type[Any] | None:
        """The source class that feeds a ``copy_target`` COPY data directly, or None."""
        return None

    def portable_type(self, generic: sa.types.TypeEngine[Any], is_key: bool) -> sa.types.TypeEngine[Any]:
        """A source column's generic type as this engine should create it."""
        return generic

    def json_columns(self, engine: Engine, table: sa.Table) -> set[str]:
        """Columns holding JSON that SQLAlchemy reflects as another type (MariaDB's JSON is LONGTEXT)."""
        return set()

    def reflected_name(self, name: str) -> str:
        """A column name as the engine spells it, from SQLAlchemy's reflection of it."""
        return name

    def expression_type(self) -> sa.types.TypeEngine[Any]:
        """The type of a target column computed by a SQL expression (its type is unknown)."""
        return sa.Text()

    def storage_step(self, target_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Convert | None:
        """A last conversion to the engine's storage convention, or None."""
        return None

    # -- diff -------------------------------------------------------------------------------
    def canonical_sql(self, rule: ColumnRule, own_kind: str, expr: str, col_type: Any, options: ValidationSpec) -> str:
        """SQL rendering ``expr`` as the rule's canonical text (``diff.normalize``), NULL kept."""
        raise NotImplementedError

    def may_null_text(self, kind: str) -> bool:
        """Whether the canonical-text SQL of ``kind`` can turn a value into NULL."""
        return False

    def row_text(self, texts: list[str]) -> str:
        """SQL joining the columns' texts by ``normalize.SEP``."""
        raise NotImplementedError

    def row_hash(self, text: str, fast_hash: bool) -> tuple[str, str]:
        """SQL of a row's 60-bit hash (or the fast hash) and of its exact sum over a group."""
        raise NotImplementedError

    def digest_query(self, side: Side, where: Sequence[Any]) -> sa.Select[Any]:
        """``count(*)`` and md5 of the row texts of ``where`` joined by ``ROW_SEP`` in key order."""
        raise NotImplementedError

    def key_hash_list(self, key: str, text: str) -> str:
        """SQL aggregating "key:md5(row text)" pairs joined by commas."""
        raise NotImplementedError

    def keyed_hash_list(self, keys: Sequence[str], text: str) -> str | None:
        """SQL aggregating, per row, each key column's text with its length in characters before
        it (``5:abcde``), then md5(row text): self-delimiting whatever a key holds. None where the
        engine has no such aggregate worth using (the caller fetches rows)."""
        return None

    def warned(self, conn: sa.Connection) -> bool:
        """The last statement on ``conn`` warned (a result the engine silently cut)."""
        return False

    def warning(self, conn: sa.Connection) -> str | None:
        """The first warning of the last statement on ``conn``, if it warned."""
        return None

    def digest_refused(self, error: sa.exc.DBAPIError) -> bool:
        """The error means "this range cannot be digested" rather than "the diff failed"."""
        return False

    def postgres_major(self, engine: Engine) -> int | None:
        """The PostgreSQL major version (fast hashes, timestamp text); None on other engines."""
        return None

    # -- capture, decommission, expectations ----------------------------------------------
    def capture_install_ddl(self, dialect: sa.Dialect, names: CaptureNames, key: Sequence[str]) -> list[str]:
        """The changelog table and the triggers that fill it."""
        raise NotImplementedError

    def capture_remove_ddl(self, dialect: sa.Dialect, names: CaptureNames) -> list[str]:
        """Statements that drop the capture triggers (the changelog table is the caller's)."""
        raise NotImplementedError

    def rename_ddl(self, schema_prefix: str, old: str, new: str) -> str:
        """Rename table ``old`` to ``new`` (quoted names; ``schema_prefix`` is '"s".' or '')."""
        return f"ALTER TABLE {schema_prefix}{old} RENAME TO {new}"

    # -- a stuck statement ----------------------------------------------------------------
    def cancel_statement(self, engine: Engine, driver_conn: Any) -> None:
        """Abort the statement running on ``driver_conn`` (a driver connection of ``engine``), from
        another thread: a stalled distributed worker's heartbeat calls it."""
        raise NotImplementedError

    # -- identity: the same table under two spellings ------------------------------------
    @contextlib.contextmanager
    def named_lock(self, conn: sa.Connection, name: str, timeout_seconds: int) -> Iterator[None]:
        """Hold the server-wide lock ``name`` on ``conn`` for the block, waiting up to
        ``timeout_seconds`` for it (``TimeoutError`` after); none where one file's own locking
        serialises writers (SQLite)."""
        yield

    def same_server(self, a: sa.Connection, b: sa.Connection, token: str) -> bool:
        """Whether two connections reach one server: a session lock taken on ``a`` is seen from ``b``
        (nothing is written). Engines without server locks compare their own identity instead."""
        raise NotImplementedError

    def table_identity(self, conn: sa.Connection, schema: str | None, table: str) -> tuple[Any, ...] | None:
        """What names the table on its server (database and object id or folded name); None when absent."""
        raise NotImplementedError

    def gx_datasource(self, ctx: Any, url: str) -> Any:
        """A Great Expectations datasource named "target" for ``url``."""
        raise NotImplementedError


def run_literal(conn: sa.Connection, sql: str) -> sa.CursorResult[Any]:
    """Run ``sql``, which carries no parameters, exactly as written. SQLAlchemy hands the driver an
    empty parameter set, and psycopg and PyMySQL then read every ``%`` as a placeholder: a spec's
    ``amount_cents % 100`` would fail (psycopg: "incomplete placeholder") or be mangled. Doubled, it
    reaches the server as written; sqlite3's ``?`` style leaves ``%`` alone."""
    if conn.dialect.paramstyle in ("format", "pyformat"):
        sql = sql.replace("%", "%%")
    return conn.exec_driver_sql(sql)


def bigint_id() -> sa.types.TypeEngine[int]:
    """A 64-bit autoincrement key: SQLite autoincrements only an INTEGER PRIMARY KEY (also 64-bit)."""
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upsert_on_conflict(insert: Any, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` (PostgreSQL and SQLite spell it alike)."""
    stmt = insert(table).values(rows)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in key}
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=key)
    return stmt.on_conflict_do_update(index_elements=key, set_=updates)


def ordered_row_texts(side: Side, where: Sequence[Any]) -> sa.Subquery:
    """The row texts of ``where`` in key order, as a subquery whose aggregate keeps that order."""
    return (
        sa.select(sa.literal_column(side.row_text).label("t"))
        .select_from(side.table)
        .where(*where)
        .order_by(*side.key_columns)
        .subquery("so_rows")
    )


def run_sample(engine: Engine, query: sa.Select[Any]) -> list[Key]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


_REGISTRY: dict[str, EngineDialect] = {}


def _registry() -> dict[str, EngineDialect]:
    if not _REGISTRY:
        from shiftover.engines.mysql import MySQL
        from shiftover.engines.postgresql import PostgreSQL
        from shiftover.engines.sqlite import SQLite

        for dialect in (PostgreSQL(), MySQL(), SQLite()):
            _REGISTRY.update(dict.fromkeys(dialect.names, dialect))
    return _REGISTRY


def backend_name(x: Engine | sa.Connection | sa.Dialect | URL | str) -> str:
    """The SQLAlchemy name of what ``x`` connects to ("postgresql", "mariadb", ...)."""
    if isinstance(x, Engine | sa.Connection):
        return x.dialect.name
    if isinstance(x, sa.Dialect):
        return x.name
    return make_url(x).get_backend_name()


def find_dialect(x: Engine | sa.Connection | sa.Dialect | URL | str) -> EngineDialect | None:
    """The ``EngineDialect`` of ``x``, or None for an engine Shiftover does not support."""
    return _registry().get(backend_name(x))


def dialect_for(x: Engine | sa.Connection | sa.Dialect | URL | str) -> EngineDialect:
    """The ``EngineDialect`` of ``x``; ``UnsupportedEngineError`` for any other engine."""
    found = find_dialect(x)
    if found is None:
        raise UnsupportedEngineError(backend_name(x))
    return found


def same_dialect(a: Engine, b: Engine) -> bool:
    """Both engines speak one SQLAlchemy dialect (MySQL and MariaDB count as two here: their servers'
    text of a float or a JSON value may differ, so a pair across them is compared as across engines)."""
    return backend_name(a) == backend_name(b)
