"""Per-range count and hash sum computed inside each database.

A row's hash is the first 60 bits of md5 of its normalised text; a range's checksum is
``count(*)`` and the exact sum of those hashes (PostgreSQL and MariaDB sum into NUMERIC/
DECIMAL, SQLite through ``so_sum``), so equal ranges give equal pairs on every engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.diff.normalize import NULL_MARK, SEP, ColumnRule, register_sqlite_functions
from shiftover.diff.segments import KeyRange, range_clause

Checksum = tuple[int, int]  # (rows, sum of 60-bit hashes)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its table, key columns and row-hash SQL."""

    engine: Engine
    table: sa.Table
    key: tuple[str, ...]  # this side's names of the key columns, in key order
    row_hash: str  # SQL: the row's 60-bit hash as an integer
    row_sum: str  # SQL: the exact sum of row hashes over a group
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
    exprs = [r.source_sql if source else r.target_sql for r in rules if r.in_sql]
    dialect = engine.dialect.name
    text = _row_text(dialect, exprs)
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
    return Side(engine=engine, table=table, key=key, row_hash=row_hash, row_sum=row_sum)


def _row_text(dialect: str, exprs: list[str]) -> str:
    parts = [f"COALESCE({e}, '{NULL_MARK}')" for e in exprs]
    if dialect in ("mysql", "mariadb"):
        return f"CONCAT_WS('{SEP}', {', '.join(parts)})"
    return f" || '{SEP}' || ".join(parts)


@contextmanager
def side_connection(side: Side) -> Iterator[sa.Connection]:
    """A connection ready for hashing: SQLite functions registered, MySQL session in UTC."""
    with side.engine.connect() as conn:
        if side.dialect == "sqlite":
            register_sqlite_functions(conn.connection.driver_connection)
        elif side.dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET time_zone = '+00:00'")
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


def bucket_checksums(side: Side, rng: KeyRange, base: int, width: int) -> dict[int, Checksum]:
    """Checksums of integer-key buckets ``(key - base) // width`` inside ``rng``, in one scan."""
    key = side.engine.dialect.identifier_preparer.quote(side.key[0])
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


def row_hashes(side: Side, rng: KeyRange) -> list[Any]:
    """Rows of (key columns..., row hash) in ``rng``: the row-level compare without the row data."""
    query = (
        sa.select(*side.key_columns, sa.literal_column(side.row_hash)).select_from(side.table).where(*_where(side, rng))
    )
    with side_connection(side) as conn:
        return list(conn.execute(query).tuples())


def key_bounds(side: Side) -> tuple[Any, Any, int]:
    """Smallest and largest value of the first key column, and the row count (filter applied)."""
    col = side.key_columns[0]
    query = (
        sa.select(sa.func.min(col), sa.func.max(col), sa.func.count())
        .select_from(side.table)
        .where(*_where(side, KeyRange(None, None)))
    )
    with side_connection(side) as conn:
        lo, hi, count = conn.execute(query).one()
    return lo, hi, int(count)
