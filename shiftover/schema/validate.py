"""Validation in the database: every row's new column equals ``up(old)`` exactly, and, when an
operation claims to be reversible, ``down(up(old))`` equals ``old`` on every row (for a split or a
merge, every new column and every old column of the move).

Exact means the engine's own comparison of the stored value with the expression's value, NULLs
equal to NULLs (``IS NOT DISTINCT FROM``), never a text rendering: a lossy ``up`` (3 decimals into
cents) is found, not rounded away. One scan per check; the offending keys (first ``sample``) and a
query that lists them all go into the error.

``rows_out_of_step`` is the last proof before ``stop_sync``, the first irreversible stage: after it
the old columns are no longer kept, so a row whose two sides disagree then keeps whichever the new
version reads, with no way back. A row is in step when its new columns are ``up(old)`` (last written
through the old columns, or backfilled) or its old columns are ``down(new)`` (last written through
the new ones); for a move that is not reversible the two differ, so either one counts. A row holding
neither was written past the sync: a session with the triggers off, or under ``sync: application`` a
write outside ``ColumnWrites``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from shiftover.schema.columns import Target
from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import ColumnMismatchError, OutOfStepError
from shiftover.schema.spec import ColumnMove, ExpandContractSpec, NewColumn, OldColumn


@dataclass(frozen=True)
class ColumnCheck:
    column: str
    what: str
    rows_checked: int
    mismatches: int
    keys: tuple[tuple[object, ...], ...] = ()
    query: str = ""


@dataclass
class ValidationReport:
    checks: list[ColumnCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.mismatches == 0 for c in self.checks)

    def require(self, error: type[ColumnMismatchError | OutOfStepError] = ColumnMismatchError) -> ValidationReport:
        """Raise ``error`` for the first failed check."""
        for c in self.checks:
            if c.mismatches:
                raise error(c.what, c.mismatches, c.keys, c.query)
        return self


def validate_columns(target: Target, spec: ExpandContractSpec, *, sample: int = 10) -> ValidationReport:
    """Per move: each new column against its ``up``; when the move claims to be reversible, each old
    column against its ``down`` over the ``up`` values (a split has one such check, a merge one per
    old column)."""
    report = ValidationReport()
    for move in spec.moves:
        olds = ", ".join(move.old_names)
        for new in move.news:
            what = f"{new.name} = up({olds})"
            report.checks.append(_check(target, what, new.name, _equal_up(target, new), sample))
        if move.reversible:
            for old in move.olds:
                what = f"down(up({olds})) = {old.name}"
                report.checks.append(_check(target, what, old.name, _round_trip(target, move, old), sample))
    return report


def rows_out_of_step(target: Target, spec: ExpandContractSpec, *, sample: int = 10) -> ValidationReport:
    """Per move: keys of rows in neither direction (new != up(old) and old != down(new));
    ``require(OutOfStepError)`` refuses with them."""
    report = ValidationReport()
    for move in spec.moves:
        olds, news = ", ".join(move.old_names), ", ".join(move.new_names)
        what = f"rows in step ({news} = up({olds}) or {olds} = down({news}))"
        report.checks.append(_check(target, what, news, _in_neither_direction(target, move), sample))
    return report


def _in_neither_direction(target: Target, move: ColumnMove) -> str:
    d = schema_dialect(target.engine)
    up_differs = " OR ".join(d.distinct(target.quote(n.name), f"({n.up})") for n in move.news)
    down_differs = " OR ".join(d.distinct(target.quote(o.name), f"({o.down})") for o in move.olds)
    keys = ", ".join(target.quote(k) for k in target.key)
    return f"SELECT {keys} FROM {target.qualified} WHERE ({up_differs}) AND ({down_differs})"


def _equal_up(target: Target, new: NewColumn) -> str:
    """Keys of rows whose new column is not ``up(old)``."""
    d = schema_dialect(target.engine)
    keys = ", ".join(target.quote(k) for k in target.key)
    return f"SELECT {keys} FROM {target.qualified} WHERE {d.distinct(target.quote(new.name), f'({new.up})')}"


def _round_trip(target: Target, move: ColumnMove, old: OldColumn) -> str:
    """Keys of rows where ``old``'s ``down`` does not give it back from the ``up`` values (not from
    the stored new values: this checks the expressions, the first check the data)."""
    d = schema_dialect(target.engine)
    others = [target.quote(c) for c in target.column_names() if c not in move.new_names]
    ups = [f"({n.up}) AS {target.quote(n.name)}" for n in move.news]
    row = f"SELECT {', '.join(others + ups)} FROM {target.qualified}"
    keys = ", ".join(target.quote(k) for k in target.key)
    return f"SELECT {keys} FROM ({row}) so_row WHERE {d.distinct(target.quote(old.name), f'({old.down})')}"


def _check(target: Target, what: str, column: str, keys_query: str, sample: int) -> ColumnCheck:
    with target.engine.connect() as conn:
        checked = int(conn.execute(sa.text(f"SELECT count(*) FROM {target.qualified}")).scalar() or 0)
        bad = int(conn.execute(sa.text(f"SELECT count(*) FROM ({keys_query}) so_bad")).scalar() or 0)
        keys = tuple(tuple(r) for r in conn.execute(sa.text(f"{keys_query} LIMIT {int(sample)}"))) if bad else ()
    return ColumnCheck(column, what, checked, bad, keys, keys_query)
