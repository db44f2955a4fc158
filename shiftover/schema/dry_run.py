"""Every existing row's ``up``, evaluated before the expand stage's DDL (read only).

The triggers run the spec's ``up`` inside the application's own writes: an ``up`` that raises on
some value (``100 / amount`` on a zero, a cast of text that is not a number) would fail the
application's write of that row from the sync stage on, and the backfill would stop on it with the
sync triggers already live. So before expand changes anything, every row's ``up`` is computed in keyset
batches by a plain SELECT (no lock beyond a read), and a batch that fails is halved down to the
row; the refusal names the expression's spec field, the row's key and the engine's error. On
MariaDB a SELECT only warns where a strict-mode write would fail (division by zero, a value it
cannot convert), so a warning counts as a failure there.

Rows written after the check are the application's: a value that makes ``up`` raise then fails
that write (as in pgroll and Reshape, whose triggers run ``up`` the same way). The README says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from shiftover.backfill.keyset import Key, range_clause
from shiftover.engines import dialect_for
from shiftover.errors import SpecError
from shiftover.schema.columns import Target
from shiftover.schema.spec import ChangeColumn, ExpandContractSpec, MergeColumns, SplitColumn

MAX_CHUNK = 50_000


@dataclass(frozen=True)
class UpExpression:
    field: str  # the spec field that holds it, named in a refusal
    column: str  # the new column it computes
    sql: str


def up_expressions(spec: ExpandContractSpec) -> list[UpExpression]:
    """Each ``up`` of the spec with its field (a rename's is the column itself: nothing to check)."""
    found = []
    for i, op in enumerate(spec.operations):
        if isinstance(op, SplitColumn):
            found += [UpExpression(f"operations.{i}.into.{j}.up", c.name, c.up) for j, c in enumerate(op.into)]
        elif isinstance(op, ChangeColumn | MergeColumns):
            found.append(UpExpression(f"operations.{i}.up", op.to, op.up))
    return found


@dataclass(frozen=True)
class DryRunReport:
    rows: int
    batches: int


def check_ups_on_rows(target: Target, spec: ExpandContractSpec, *, chunk_rows: int | None = None) -> DryRunReport:
    """Compute every ``up`` on every row, a batch at a time; ``SpecError`` naming the first ``up``
    that fails, on which row, and why."""
    ups = up_expressions(spec)
    if not ups:
        return DryRunReport(0, 0)
    table = sa.Table(target.table, sa.MetaData(), schema=target.schema, autoload_with=target.engine)
    cols = [table.c[k] for k in target.key]
    chunk = min(chunk_rows or spec.backfill.chunk_rows, MAX_CHUNK)
    rows = batches = 0
    lo: Key | None = None
    while True:
        keys = _keys(target, table, cols, lo, chunk)
        if not keys:
            return DryRunReport(rows, batches)
        if _failure(target, table, ups, lo, keys[-1]) is not None:
            _refuse(target, table, ups, lo, keys)
        rows, batches, lo = rows + len(keys), batches + 1, keys[-1]
        if len(keys) < chunk:
            return DryRunReport(rows, batches)


def _keys(target: Target, table: sa.Table, cols: list[sa.Column[object]], lo: Key | None, n: int) -> list[Key]:
    query = (
        sa.select(*cols)
        .where(range_clause(table, target.key, lo, None, dialect_for(target.engine)))
        .order_by(*cols)
        .limit(n)
    )
    with target.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _failure(target: Target, table: sa.Table, ups: list[UpExpression], lo: Key | None, hi: Key) -> str | None:
    """Why computing ``ups`` over the rows in ``(lo, hi]`` fails, or None when it does not."""
    # a CASE over each value makes the engine compute it (an unused select-list column may be skipped)
    computed = [sa.func.count(sa.case((sa.literal_column(f"({u.sql})").is_(None), 1))) for u in ups]
    query = sa.select(*computed).where(range_clause(table, target.key, lo, hi, dialect_for(target.engine)))
    with target.engine.connect() as conn:
        try:
            conn.execute(query).all()
        except sa.exc.DBAPIError as exc:
            return str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        warning = dialect_for(target.engine).warning(conn)
    return None if warning is None else f"{warning} (a warning in a SELECT, an error in a strict-mode write)"


def _refuse(target: Target, table: sa.Table, ups: list[UpExpression], lo: Key | None, keys: list[Key]) -> None:
    """Halve the failing batch ``(lo, keys[-1]]`` down to one row, find which ``up`` fails on it, raise."""
    while len(keys) > 1:
        half = len(keys) // 2
        if _failure(target, table, ups, lo, keys[half - 1]) is not None:
            keys = keys[:half]
        else:
            lo, keys = keys[half - 1], keys[half:]
    row = keys[0]
    for up in ups:
        reason = _failure(target, table, [up], lo, row)
        if reason is not None:
            shown = row[0] if len(row) == 1 else row
            raise SpecError(
                up.field,
                f"{up.sql!r} fails on the row with key {shown!r} ({reason}). The sync triggers would run it in "
                f"the application's writes, and fail them; nothing was changed. Make {up.column}'s up handle "
                "that value (a CASE, NULLIF), or fix the row",
            )
    raise SpecError(ups[0].field, f"the up expressions fail together on the row with key {row!r}")
