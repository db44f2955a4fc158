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

from shiftover.diff.normalize import NULL_MARK, ColumnRule
from shiftover.diff.segments import KeyRange, range_clause
from shiftover.engines import EngineDialect, dialect_for
from shiftover.rowsync import TableStats
from shiftover.rowsync import table_stats as rowsync_table_stats

Checksum = tuple[int, int]  # (rows, sum of 60-bit hashes)
Digest = tuple[int, str | None]  # (rows, md5 of the row texts in key order; None: not computed)


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
    def dialect(self) -> EngineDialect:
        return dialect_for(self.engine)

    def quoted(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    @property
    def key_columns(self) -> list[sa.ColumnElement[Any]]:
        return [self.table.c[k] for k in self.key]

    def in_range(self, rng: KeyRange) -> sa.ColumnElement[bool]:
        """``lo < key <= hi`` as this engine indexes it."""
        return range_clause(self.key_columns, rng, tuples=self.dialect.row_value_compare)


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
    dialect = dialect_for(engine)
    parts = [
        (r.source_sql if source else r.target_sql, r.needs_null_mark(dialect, source=source)) for r in rules if r.in_sql
    ]
    text = _row_text(dialect, parts)
    row_hash, row_sum = dialect.row_hash(text, fast_hash)
    primary = tuple(c.name for c in table.primary_key.columns) == key
    return Side(engine, table, key, text, row_hash, row_sum, key_is_primary=primary, fast_hash=fast_hash)


def _row_text(dialect: EngineDialect, parts: list[tuple[str, bool]]) -> str:
    """The columns' texts joined by SEP, a possibly-NULL one as NULL_MARK when it is NULL."""
    return dialect.row_text([f"COALESCE({e}, '{NULL_MARK}')" if nullable else e for e, nullable in parts])


@contextmanager
def side_connection(side: Side) -> Iterator[sa.Connection]:
    """A connection ready for hashing: SQLite functions registered, MySQL session in UTC."""
    with side.engine.connect() as conn:
        side.dialect.prepare_hash_session(conn)
        yield conn


def _where(side: Side, rng: KeyRange) -> list[sa.ColumnElement[bool] | sa.TextClause]:
    clauses: list[sa.ColumnElement[bool] | sa.TextClause] = [side.in_range(rng)]
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
    query = side.dialect.digest_query(side, _where(side, rng))
    try:
        with side_connection(side) as conn:
            count, digest = conn.execute(query).one()
            if side.dialect.warned(conn):
                digest = None
    except sa.exc.DBAPIError as error:
        if not side.dialect.digest_refused(error):
            raise
        return range_checksum(side, rng)[0], None  # the sums compare what the digest could not join
    return int(count), digest


def bucket_checksums(side: Side, rng: KeyRange, base: int, width: int) -> dict[int, Checksum]:
    """Checksums of integer-key buckets ``(key - base) // width`` inside ``rng``, in one scan."""
    key = side.quoted(side.key[0])
    # Grouped by the expression, not by its label: a table's own column of that name would win
    # (PostgreSQL resolves GROUP BY b to a column b first).
    bucket: sa.ColumnClause[Any] = sa.literal_column(f"(({key} - {int(base)}) {side.dialect.int_div} {int(width)})")
    query = (
        sa.select(bucket, sa.func.count(), sa.literal_column(side.row_sum))
        .select_from(side.table)
        .where(*_where(side, rng))
        .group_by(bucket)
    )
    with side_connection(side) as conn:
        return {int(b): (int(c), int(s or 0)) for b, c, s in conn.execute(query)}


def int_key_hashes(side: Side, rng: KeyRange) -> dict[int, str] | None:
    """``{key: md5 of the row text}`` for a single integer key, shipped as one "key:md5,..." value.

    One string to split instead of a result row per key: with thousands of differing rows the
    drivers' per-row parsing (pure Python for PyMySQL, under the GIL) cost more than the hashing.
    None when MariaDB/MySQL warned (a cut GROUP_CONCAT): the caller fetches rows instead.
    """
    joined = side.dialect.key_hash_list(side.quoted(side.key[0]), side.row_text)
    query: Any = sa.select(sa.literal_column(joined)).select_from(side.table).where(*_where(side, rng))
    with side_connection(side) as conn:
        text = conn.execute(query).scalar()
        if side.dialect.warned(conn):
            return None
    if not text:
        return {}
    if isinstance(text, bytes):
        text = text.decode()
    pairs = (item.partition(":") for item in text.split(","))
    return {int(k): digest for k, _, digest in pairs}


def keyed_hashes(side: Side, rng: KeyRange) -> dict[tuple[str, ...], str] | None:
    """``{key texts: md5 of the row text}`` for a text or integer key of any width, shipped as one
    length-prefixed string (``keyed_hash_list``): a segment's 8k rows cost one value to split
    instead of 8k result rows through the driver (0.2-0.6 s per side under load, GIL-bound).
    None where the engine cannot, or MariaDB/MySQL warned (a cut GROUP_CONCAT)."""
    joined = side.dialect.keyed_hash_list([side.quoted(k) for k in side.key], side.row_text)
    if joined is None:
        return None
    query: Any = sa.select(sa.literal_column(joined)).select_from(side.table).where(*_where(side, rng))
    with side_connection(side) as conn:
        text = conn.execute(query).scalar()
        if side.dialect.warned(conn):
            return None
    if isinstance(text, bytes):
        text = text.decode()
    return parse_keyed_hashes(text or "", len(side.key))


def parse_keyed_hashes(text: str, width: int) -> dict[tuple[str, ...], str]:
    """The inverse of ``keyed_hash_list``: each key field is ``<chars>:<text>``, then 32 hex digits."""
    out: dict[tuple[str, ...], str] = {}
    i, end = 0, len(text)
    while i < end:
        fields = []
        for _ in range(width):
            colon = text.index(":", i)
            start = colon + 1
            i = start + int(text[i:colon])
            fields.append(text[start:i])
        out[tuple(fields)] = text[i : i + 32]
        i += 32
    return out


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
