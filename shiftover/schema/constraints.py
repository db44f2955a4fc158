"""Indexes and constraints of an expand/contract change: built online, undone by the rollback.

Where each belongs (pgroll's model: the expand stage adds what old code cannot notice, a constraint
that refuses writes waits until every row and both code paths satisfy it):

- ``create_index`` runs in the **expand** stage, after the new columns are added: an index changes
  no result and refuses no write (a unique one refuses duplicates: existing ones are counted first
  and the build is refused with a sample). PostgreSQL builds it ``CONCURRENTLY``, MariaDB
  ``INPLACE, LOCK=NONE``; SQLite has no online build and builds it plainly.
- ``add_check``, ``set_not_null`` and ``add_foreign_key`` run in the **constrain** stage, after ``validate`` and before
  reads switch: from then on every write is checked, so they wait until the backfill has filled
  new columns (a NOT NULL on a new column only holds then) and the validation has passed. The rows
  that would violate it are counted in the database first and the stage is refused, naming how many
  and a sample of their keys, before any DDL. A row written between the count and the validation
  makes the validation fail (the statement's error, not a lock time-out); a rollback removes the
  half-added constraint. A foreign key's orphans (rows whose key, all parts non-NULL, has no
  referenced row) are counted before and again after it is added: MariaDB adds one online only
  without checking existing rows.

Rollback before contract removes them all (constraints first, then indexes), so the table is as it
was. ``set_not_null`` is undone only for a column that was nullable when the change began (the
preflight refuses a column that is NOT NULL already), and only when the caller says the constrain
stage may have run (``shiftover.flows.expand`` passes that from the recorded phase). Every
statement goes through ``locking.run_ddl``; engine-specific SQL is in ``engines/<engine>.py``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import sqlalchemy as sa

from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import ConstraintViolationError, LockTimeoutError
from shiftover.schema.locking import DdlReport, run_ddl
from shiftover.schema.spec import AddCheck, AddForeignKey, CreateIndex, ExpandContractSpec, SetNotNull

if TYPE_CHECKING:
    from shiftover.schema.columns import Target

SAMPLE = 10
_MAX_NAME = 60


def helper_check(table: str, column: str) -> str:
    """The name of ``set_not_null``'s helper CHECK (where the engine uses one)."""
    return f"so_nn_{table}_{column}"[:_MAX_NAME]


def violations(target: Target, condition: str, what: str, *, sample: int = SAMPLE) -> ConstraintViolationError | None:
    """The rows where ``condition`` holds, as an error naming their count and first keys, or None."""
    keys = ", ".join(target.quote(k) for k in target.key)
    query = f"SELECT {keys} FROM {target.qualified} WHERE {condition}"
    with target.engine.connect() as conn:
        bad = int(conn.execute(sa.text(f"SELECT count(*) FROM ({query}) so_bad")).scalar() or 0)
        if not bad:
            return None
        order = f" ORDER BY {keys}"
        found = tuple(tuple(r) for r in conn.execute(sa.text(f"{query}{order} LIMIT {int(sample)}")))
    return ConstraintViolationError(what, bad, found, query)


def duplicates(target: Target, index: CreateIndex, *, sample: int = SAMPLE) -> ConstraintViolationError | None:
    """For a unique index: the values held by more than one row (NULLs never collide)."""
    cols = ", ".join(target.quote(c) for c in index.columns)
    not_null = " AND ".join(f"{target.quote(c)} IS NOT NULL" for c in index.columns)
    query = f"SELECT {cols} FROM {target.qualified} WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1"
    with target.engine.connect() as conn:
        bad = int(conn.execute(sa.text(f"SELECT count(*) FROM ({query}) so_dup")).scalar() or 0)
        if not bad:
            return None
        found = tuple(tuple(r) for r in conn.execute(sa.text(f"{query} ORDER BY {cols} LIMIT {int(sample)}")))
    what = f"unique index {index.name} on ({', '.join(index.columns)}): values held by more than one row"
    return ConstraintViolationError(what, bad, found, query, unit="value(s)")


def index_names(target: Target) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(target.engine).get_indexes(target.table, schema=target.schema)}


def check_names(target: Target) -> set[str]:
    insp = sa.inspect(target.engine)
    return {str(c["name"]) for c in insp.get_check_constraints(target.table, schema=target.schema)}


def foreign_key_names(target: Target) -> set[str]:
    insp = sa.inspect(target.engine)
    return {str(f["name"]) for f in insp.get_foreign_keys(target.table, schema=target.schema) if f.get("name")}


def referenced(target: Target, op: AddForeignKey) -> str:
    return (
        f"{target.quote(target.schema)}.{target.quote(op.ref_table)}" if target.schema else target.quote(op.ref_table)
    )


def orphans_condition(target: Target, op: AddForeignKey) -> str:
    """True for a row whose key (every part non-NULL) has no row in the referenced table."""
    ref = referenced(target, op)
    set_ = " AND ".join(f"{target.qualified}.{target.quote(c)} IS NOT NULL" for c in op.columns)
    match = " AND ".join(
        f"so_ref.{target.quote(r)} = {target.qualified}.{target.quote(c)}"
        for c, r in zip(op.columns, op.ref_columns, strict=True)
    )
    return f"{set_} AND NOT EXISTS (SELECT 1 FROM {ref} so_ref WHERE {match})"


def is_nullable(target: Target, column: str) -> bool | None:
    """None when the table has no such column."""
    for c in sa.inspect(target.engine).get_columns(target.table, schema=target.schema):
        if c["name"] == column:
            return bool(c["nullable"])
    return None


def build_indexes(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Every ``create_index``, online where the engine can; a unique one with duplicates is refused
    before it is built. Re-runnable: a valid index of that name is kept, an invalid one rebuilt."""
    report = report or DdlReport()
    dialect = schema_dialect(target.engine)
    for index in spec.indexes:
        if index.unique:
            found = duplicates(target, index)
            if found is not None:
                raise found
        name = target.quote(index.name)
        statement = dialect.create_index(
            target.qualified, name, [target.quote(c) for c in index.columns], index.unique, spec.lock.timeout_ms
        )
        cleanup = partial(dialect.invalid_index_cleanup, table=target.qualified, name=name)
        try:
            run_ddl(
                target.engine,
                [statement],
                spec.lock,
                table=target.table,
                schema=target.schema,
                report=report,
                outside_transaction=dialect.index_outside_transaction,
                before=cleanup,
            )
        except (sa.exc.DBAPIError, LockTimeoutError) as error:
            # A failed online build may leave an INVALID index: once marked ready, every write
            # updates it (and a unique one refuses duplicates). It goes now, not on a later run.
            with target.engine.connect() as conn:
                leftover = cleanup(conn)
            if leftover:
                run_ddl(
                    target.engine,
                    leftover,
                    spec.lock,
                    table=target.table,
                    schema=target.schema,
                    outside_transaction=dialect.index_outside_transaction,
                )
            found = duplicates(target, index) if index.unique else None
            if found is not None:  # committed while the build ran: named as the first count names them
                raise found from error
            raise
    return report


def drop_indexes(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    report = report or DdlReport()
    dialect = schema_dialect(target.engine)
    # every one, IF EXISTS: an INVALID index left by a failed concurrent build goes too
    statements = [
        dialect.drop_index(target.qualified, target.quote(i.name), spec.lock.timeout_ms) for i in spec.indexes
    ]
    return run_ddl(
        target.engine,
        statements,
        spec.lock,
        table=target.table,
        schema=target.schema,
        report=report,
        outside_transaction=dialect.index_outside_transaction,
    )


def enforce_constraints(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """The constrain stage: each ``add_check`` and ``set_not_null`` in spec order, its violating rows
    counted first (refused with their number and keys), then added without a long lock."""
    report = report or DdlReport()
    for op in spec.constraints:
        if isinstance(op, AddCheck):
            _add_check(target, spec, op, report)
        elif isinstance(op, AddForeignKey):
            _add_foreign_key(target, spec, op, report)
        else:
            _set_not_null(target, spec, op, report)
    return report


def _add_foreign_key(target: Target, spec: ExpandContractSpec, op: AddForeignKey, report: DdlReport) -> None:
    what = f"foreign key {op.name}: ({', '.join(op.columns)}) not found in {op.ref_table} ({', '.join(op.ref_columns)})"
    found = violations(target, orphans_condition(target, op), what)
    if found is not None:
        raise found
    dialect = schema_dialect(target.engine)
    steps = dialect.add_foreign_key(
        target.qualified,
        target.quote(op.name),
        [target.quote(c) for c in op.columns],
        referenced(target, op),
        [target.quote(c) for c in op.ref_columns],
        spec.lock.timeout_ms,
    )
    if op.name in foreign_key_names(target):
        steps = steps[1:]  # added by an earlier attempt: validate it where the engine has a separate step
    _steps(target, spec, steps, report)
    late = violations(target, orphans_condition(target, op), what + " (written while it was being added)")
    if late is not None:  # only possible where the engine added it unchecked
        run_ddl(
            target.engine,
            [dialect.drop_foreign_key(target.qualified, target.quote(op.name), spec.lock.timeout_ms)],
            spec.lock,
            table=target.table,
            schema=target.schema,
            report=report,
        )
        raise late


def _steps(target: Target, spec: ExpandContractSpec, steps: list[list[str]], report: DdlReport) -> None:
    """Each step in its own transaction (a VALIDATE must not run under the ADD's exclusive lock)."""
    for step in steps:
        run_ddl(target.engine, step, spec.lock, table=target.table, schema=target.schema, report=report)


def _add_check(target: Target, spec: ExpandContractSpec, op: AddCheck, report: DdlReport) -> None:
    found = violations(target, f"NOT ({op.expression})", f"check {op.name} ({op.expression}) fails")
    if found is not None:
        raise found
    dialect = schema_dialect(target.engine)
    steps = dialect.add_check(target.qualified, target.quote(op.name), op.expression, spec.lock.timeout_ms)
    if op.name in check_names(target):
        steps = steps[-1:]  # added by an earlier attempt: validate it (a no-op when it is valid)
    _steps(target, spec, steps, report)


def _set_not_null(target: Target, spec: ExpandContractSpec, op: SetNotNull, report: DdlReport) -> None:
    if not is_nullable(target, op.column):
        return  # done by an earlier attempt (the preflight refused a column NOT NULL from the start)
    found = violations(target, f"{target.quote(op.column)} IS NULL", f"{op.column} IS NULL")
    if found is not None:
        raise found
    dialect = schema_dialect(target.engine)
    helper = helper_check(target.table, op.column)
    with target.engine.connect() as conn:
        steps = dialect.set_not_null(
            conn,
            target.qualified,
            target.quote(op.column),
            target.quote(helper),
            helper in check_names(target),
            spec.lock.timeout_ms,
        )
    _steps(target, spec, steps, report)


def remove_constraints(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Undo the constrain stage, last operation first; idempotent."""
    report = report or DdlReport()
    dialect = schema_dialect(target.engine)
    for op in reversed(spec.constraints):
        statements: list[str] = []
        if isinstance(op, AddCheck):
            if op.name in check_names(target):
                statements = [dialect.drop_check(target.qualified, target.quote(op.name), spec.lock.timeout_ms)]
        elif isinstance(op, AddForeignKey):
            if op.name in foreign_key_names(target):
                statements = [dialect.drop_foreign_key(target.qualified, target.quote(op.name), spec.lock.timeout_ms)]
        elif is_nullable(target, op.column) is False:
            helper = target.quote(helper_check(target.table, op.column))
            with target.engine.connect() as conn:
                statements = dialect.drop_not_null(
                    conn, target.qualified, target.quote(op.column), helper, spec.lock.timeout_ms
                )
        elif helper_check(target.table, op.column) in check_names(target):  # stopped before SET NOT NULL
            helper = target.quote(helper_check(target.table, op.column))
            statements = [dialect.drop_check(target.qualified, helper, spec.lock.timeout_ms)]
        run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)
    return report


def planned_constraint_ddl(target: Target, spec: ExpandContractSpec) -> dict[str, list[str]]:
    """The index and constraint statements ``shiftover plan --ddl`` shows (read-only)."""
    dialect = schema_dialect(target.engine)
    t, ms = target.qualified, spec.lock.timeout_ms
    indexes = [
        dialect.create_index(t, target.quote(i.name), [target.quote(c) for c in i.columns], i.unique, ms)
        for i in spec.indexes
    ]
    constrain: list[str] = []
    for op in spec.constraints:
        if dialect.online_refusal(op.op):
            constrain.append(f"-- {op.op} refused: {dialect.online_refusal(op.op)}")
        elif isinstance(op, AddCheck):
            constrain += [s for step in dialect.add_check(t, target.quote(op.name), op.expression, ms) for s in step]
        elif isinstance(op, AddForeignKey):
            cols, refs = [target.quote(c) for c in op.columns], [target.quote(c) for c in op.ref_columns]
            steps = dialect.add_foreign_key(t, target.quote(op.name), cols, referenced(target, op), refs, ms)
            constrain += [s for step in steps for s in step]
        elif isinstance(op, SetNotNull) and op.column in target.column_names():
            helper = target.quote(helper_check(target.table, op.column))
            with target.engine.connect() as conn:
                steps = dialect.set_not_null(conn, t, target.quote(op.column), helper, False, ms)
            constrain += [s for step in steps for s in step]
        else:
            constrain.append(f"-- set NOT NULL on {op.column} once expand has added it")
    undo: list[str] = []
    for op in reversed(spec.constraints):
        if dialect.online_refusal(op.op):
            continue
        if isinstance(op, AddCheck):
            undo.append(dialect.drop_check(t, target.quote(op.name), ms))
        elif isinstance(op, AddForeignKey):
            undo.append(dialect.drop_foreign_key(t, target.quote(op.name), ms))
        else:
            undo.append(f"-- {op.column} made nullable again, if the constrain stage set it NOT NULL")
    return {"indexes": indexes, "constrain": constrain, "undo": undo}
