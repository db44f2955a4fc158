"""Per-range checksums computed inside each database.

Two kinds, both over the rows' canonical text (``normalize``):

- the **digest** of a range: ``count(*)`` and md5 of the row texts joined in key order. One md5
  per range instead of one per row, so it is the cheap screen every segment of an integer key
  goes through first. Its order comes from the key (an ``ORDER BY``, or on MariaDB/MySQL the
  primary key's own range scan); if an engine ever returned another order, the digests would
  differ and the range would be narrowed with the sums below: slower, never wrong.
- the **sum** of a range: ``count(*)`` and the exact sum of each row's 60-bit hash (the first
  60 bits of md5; PostgreSQL and MariaDB sum into NUMERIC/DECIMAL, SQLite through ``so_sum``).
  Order-insensitive and groupable, so it narrows a differing range into buckets in one scan,
  and screens the keys whose order engines disagree on (text, UUID, composite keys).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.diff.normalize import NULL_MARK, ROW_SEP, SEP, ColumnRule, register_sqlite_functions
from shiftover.diff.segments import KeyRange, range_clause
from shiftover.rowsync import TableStats
from shiftover.rowsync import table_stats as rowsync_table_stats

Checksum = tuple[int, int]  # (rows, sum of 60-bit hashes)
Digest = tuple[int, str | None]  # (rows, md5 of the row texts in key order; None: not computed)
GROUP_CONCAT_MAX = 4_294_967_295  # MariaDB/MySQL: one GROUP_CONCAT's cap for the session (4 GiB)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its table, key columns and row-hash SQL."""

    engine: Engine
    table: sa.Table
    key: tuple[str, ...]  # this side's names of the key columns, in key order
    row_text: str  # SQL: the row's canonical text (never NULL)
    row_hash: str  # SQL: the row's 60-bit hash as an integer
    row_sum: str  # SQL: the exact sum of row hashes over a group
    key_is_primary: bool = False  # the key is the table's primary key (its range scan is in key order)
    fast_hash: bool = False  # row_hash is PostgreSQL's hashtextextended (both sides one major version)
    filter_sql: str | None = None  # e.g. "updated_at >= :since"
    filter_params: tuple[tuple[str, Any], ...] = ()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def key_columns(self) -> list[sa.ColumnElement[Any]]:
        return [self.table.c[k] for k in self.key]


def build_side(
    engine: Engine,
    table: sa.Table,
    key: tuple[str, ...],
    rules: Sequence[ColumnRule],
    *,
    source: bool,
    fast_hash: bool = False,
) -> Side:
    """The hash SQL for one side from the rules (source or target expressions).

    ``fast_hash`` (both sides PostgreSQL of one major version): ``hashtextextended``, a 64-bit
    non-cryptographic hash about twice as fast as md5; both sides must agree on it.
    """
    dialect = engine.dialect.name
    parts = [
        (r.source_sql if source else r.target_sql, r.needs_null_mark(dialect, source=source)) for r in rules if r.in_sql
    ]
    text = _row_text(dialect, parts)
    if dialect == "postgresql" and fast_hash:
        row_hash = f"hashtextextended({text}, 0)"
        row_sum = f"sum({row_hash})"
    elif dialect == "postgresql":
        row_hash = f"('x' || substr(md5({text}), 1, 15))::bit(60)::bigint"
        row_sum = f"sum({row_hash})"
    elif dialect in ("mysql", "mariadb"):
        row_hash = f"CAST(CONV(LEFT(MD5({text}), 15), 16, 10) AS UNSIGNED)"
        row_sum = f"SUM({row_hash})"
    else:
        row_hash = f"so_hash60({text})"
        row_sum = f"so_sum({row_hash})"
    primary = tuple(c.name for c in table.primary_key.columns) == key
    return Side(engine, table, key, text, row_hash, row_sum, key_is_primary=primary, fast_hash=fast_hash)


def _row_text(dialect: str, parts: list[tuple[str, bool]]) -> str:
    """The columns' texts joined by SEP, a possibly-NULL one as NULL_MARK when it is NULL."""
    texts = [f"COALESCE({e}, '{NULL_MARK}')" if nullable else e for e, nullable in parts]
    if dialect in ("mysql", "mariadb"):
        return f"CONCAT_WS('{SEP}', {', '.join(texts)})"
    if dialect == "postgresql" and len(texts) < 100:  # concat_ws: one call, not one per column
        return f"concat_ws('{SEP}', {', '.join(texts)})"
    return f" || '{SEP}' || ".join(texts)


@contextmanager
def side_connection(side: Side) -> Iterator[sa.Connection]:
    """A connection ready for hashing: SQLite functions registered, MySQL session in UTC."""
    with side.engine.connect() as conn:
        if side.dialect == "sqlite":
            register_sqlite_functions(conn.connection.driver_connection)
        elif side.dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql(f"SET time_zone = '+00:00', group_concat_max_len = {GROUP_CONCAT_MAX}")
        yield conn


def _where(side: Side, rng: KeyRange) -> list[sa.ColumnElement[bool] | sa.TextClause]:
    clauses: list[sa.ColumnElement[bool] | sa.TextClause] = [range_clause(side.key_columns, rng)]
    if side.filter_sql:
        clauses.append(sa.text(side.filter_sql).bindparams(**dict(side.filter_params)))
    return clauses


def range_checksum(side: Side, rng: KeyRange) -> Checksum:
    """Count and hash sum of the rows in ``rng``."""
    query: Any = (
        sa.select(sa.func.count(), sa.literal_column(side.row_sum)).select_from(side.table).where(*_where(side, rng))
    )
    with side_connection(side) as conn:
        count, total = conn.execute(query).one()
    return int(count), int(total or 0)


def range_digest(side: Side, rng: KeyRange) -> Digest:
    """Count and md5 of the row texts of ``rng`` joined in key order.

    The digest is None when the engine could not build it: MariaDB/MySQL warned (a GROUP_CONCAT
    cut at its cap, a value it could not convert), or PostgreSQL refused the joined bytes (past
    its 1 GB limit, or not UTF-8). The caller then compares the range by its sums. Segments are sized
    from the tables' byte estimates so that this stays the exception.
    """
    where = _where(side, rng)
    if side.dialect in ("mysql", "mariadb"):
        order = "" if side.key_is_primary else " ORDER BY " + ", ".join(_quoted(side, k) for k in side.key)
        joined = f"MD5(GROUP_CONCAT({side.row_text}{order} SEPARATOR X'{ROW_SEP.hex()}'))"
        table: Any = side.table
        query: Any = sa.select(sa.func.count(), sa.literal_column(joined)).select_from(table).where(*where)
        if side.key_is_primary:  # the primary key's range scan gives key order without a sort
            query = query.with_hint(table, "FORCE INDEX (PRIMARY)", "mysql").with_hint(
                table, "FORCE INDEX (PRIMARY)", "mariadb"
            )
        with side_connection(side) as conn:
            count, digest = conn.execute(query).one()
            if _warned(conn):
                digest = None
        return int(count), digest
    rows = (
        sa.select(sa.literal_column(side.row_text).label("t"))
        .select_from(side.table)
        .where(*where)
        .order_by(*side.key_columns)
        .subquery("so_rows")
    )
    if side.dialect == "postgresql":  # text cannot hold 0xFF: join the rows' UTF-8 bytes
        utf8 = sa.func.convert_to(rows.c.t, sa.literal_column("'UTF8'"))
        digest_sql: Any = sa.func.md5(sa.func.string_agg(utf8, sa.literal_column(f"'\\x{ROW_SEP.hex()}'::bytea")))
    else:
        digest_sql = sa.func.so_digest(rows.c.t)  # a Python aggregate, fed in the subquery's order
    try:
        with side_connection(side) as conn:
            count, digest = conn.execute(sa.select(sa.func.count(), digest_sql).select_from(rows)).one()
    except sa.exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) not in _NO_DIGEST:
            raise
        return range_checksum(side, rng)[0], None  # the sums compare what the digest could not join
    return int(count), digest


# PostgreSQL errors that mean "this range cannot be digested", not "the diff failed": past the 1 GB
# text limit or out of memory, and text that is not UTF-8 (an SQL_ASCII database holding other bytes,
# which convert_to refuses and md5 of the text does not).
_NO_DIGEST = ("54000", "53200", "22021")


def _warned(conn: sa.Connection) -> bool:
    """MariaDB/MySQL warned on the last statement (a GROUP_CONCAT cut at max_allowed_packet, say)."""
    return bool(conn.exec_driver_sql("SELECT @@warning_count").scalar())


def _quoted(side: Side, name: str) -> str:
    return side.engine.dialect.identifier_preparer.quote(name)


def bucket_checksums(side: Side, rng: KeyRange, base: int, width: int) -> dict[int, Checksum]:
    """Checksums of integer-key buckets ``(key - base) // width`` inside ``rng``, in one scan."""
    key = _quoted(side, side.key[0])
    op = "DIV" if side.dialect in ("mysql", "mariadb") else "/"
    bucket: sa.Label[Any] = sa.literal_column(f"(({key} - {int(base)}) {op} {int(width)})").label("b")
    query = (
        sa.select(bucket, sa.func.count(), sa.literal_column(side.row_sum))
        .select_from(side.table)
        .where(*_where(side, rng))
        .group_by(sa.literal_column("b"))
    )
    with side_connection(side) as conn:
        return {int(b): (int(c), int(s or 0)) for b, c, s in conn.execute(query)}


def int_key_hashes(side: Side, rng: KeyRange) -> dict[int, str] | None:
    """``{key: md5 of the row text}`` for a single integer key, shipped as one "key:md5,..." value.

    One string to split instead of a result row per key: with thousands of differing rows the
    drivers' per-row parsing (pure Python for PyMySQL, under the GIL) cost more than the hashing.
    None when MariaDB/MySQL warned (a cut GROUP_CONCAT): the caller fetches rows instead.
    """
    key = _quoted(side, side.key[0])
    if side.dialect in ("mysql", "mariadb"):
        joined = f"GROUP_CONCAT(CONCAT({key}, ':', MD5({side.row_text})) SEPARATOR ',')"
    elif side.dialect == "postgresql":
        joined = f"string_agg(({key})::text || ':' || md5({side.row_text}), ',')"
    else:
        joined = f"group_concat(CAST({key} AS TEXT) || ':' || so_md5({side.row_text}), ',')"
    query: Any = sa.select(sa.literal_column(joined)).select_from(side.table).where(*_where(side, rng))
    with side_connection(side) as conn:
        text = conn.execute(query).scalar()
        if side.dialect in ("mysql", "mariadb") and _warned(conn):
            return None
    if not text:
        return {}
    if isinstance(text, bytes):
        text = text.decode()
    pairs = (item.partition(":") for item in text.split(","))
    return {int(k): digest for k, _, digest in pairs}


def row_hashes(side: Side, rng: KeyRange) -> list[Any]:
    """Rows of (key columns..., row hash) in ``rng``: the row-level compare without the row data."""
    query = (
        sa.select(*side.key_columns, sa.literal_column(side.row_hash)).select_from(side.table).where(*_where(side, rng))
    )
    with side_connection(side) as conn:
        return list(conn.execute(query).tuples())


def key_bounds(side: Side, count: bool = True) -> tuple[Any, Any, int | None]:
    """Smallest and largest value of the first key column, and the row count (filter applied).

    Without ``count`` the bounds come from the key's index alone and the count is None.
    """
    col = side.key_columns[0]
    counted: Any = sa.func.count() if count else sa.null()
    query = (
        sa.select(sa.func.min(col), sa.func.max(col), counted)
        .select_from(side.table)
        .where(*_where(side, KeyRange(None, None)))
    )
    with side_connection(side) as conn:
        lo, hi, rows = conn.execute(query).one()
    return lo, hi, None if rows is None else int(rows)


def table_stats(side: Side) -> TableStats:
    """The side's table statistics (``rowsync.table_stats``), to size segments."""
    return rowsync_table_stats(side.engine, side.table)
