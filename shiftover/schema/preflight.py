"""Check an expand/contract spec against its live table before any DDL.

Every problem is a ``SpecError`` naming the spec field: an unreachable database, a table or key
that is not there, an old column that is missing, a new column that exists already (expand would
take it over, the sync overwrite it and a rollback drop it), and ``up``/``down`` SQL the engine
cannot resolve. The sync triggers evaluate those expressions on every application write, so one
that fails there fails the application's writes: each is planned here (``WHERE 1 = 0``, never run)
over the table's columns, the new ones as NULLs of their declared type.

A ``split_column`` or ``merge_columns`` is held to what its sync triggers need: every ``up`` reads
every old column of the operation and no new one, every ``down`` every new column and no old one
(asked of the engine by planning the expression without that column), so no write through either
side is lost and assigning one side never changes what the other side's expressions read.

Indexes and constraints: an index's columns must exist (or be added by this change) and its name
be new; a CHECK's expression is planned the same way and its name must be new; a NOT NULL column
must exist (or be added) and be nullable now (a rollback makes it nullable again). An operation the
engine cannot do online (``SchemaDialect.online_refusal``) is refused here, saying what would block.
The spec's expectations may name only the table's columns and those the change adds, and must be
expectations Great Expectations knows (``shiftover.schema.expectations.check_expectations``).
"""

from __future__ import annotations

import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.engines import run_literal
from shiftover.errors import SpecError
from shiftover.expectations import preload_great_expectations
from shiftover.preflight import check_unique_key, inspect_endpoint, table_columns
from shiftover.schema.columns import Target, table_rename
from shiftover.schema.constraints import check_names, foreign_key_names, index_names, is_nullable
from shiftover.schema.engines import schema_dialect
from shiftover.schema.expectations import check_expectations
from shiftover.schema.spec import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    ChangeColumn,
    ColumnOperation,
    CreateIndex,
    DropColumn,
    ExpandContractSpec,
    MergeColumns,
    Operation,
    RenameTable,
    SetNotNull,
    SplitColumn,
)


def open_checked_table(spec: ExpandContractSpec) -> tuple[Target, list[str]]:
    """The change's table, reachable and keyed as the spec says, and its columns."""
    inspector = inspect_endpoint(spec.database, "database")
    columns = table_columns(inspector, spec.database, "database")
    missing = [k for k in spec.key if k not in columns]
    if missing:
        raise SpecError("key", f"no column(s) {missing} in table {spec.database.table!r} (its columns: {columns})")
    check_unique_key(inspector, spec.database, spec.key, "key")
    return Target.of(get_engine(spec.database.url), spec), columns


def check_change(spec: ExpandContractSpec) -> Target:
    """Everything ``open_checked_table`` checks, then each operation's columns, types and SQL."""
    if spec.rename is not None and _renamed_already(spec):  # a run killed after the swap, before recording it
        return Target.of(get_engine(spec.database.url), spec)
    target, present = open_checked_table(spec)
    new_columns = [
        column
        for i, op in enumerate(spec.operations)
        if isinstance(op, ColumnOperation)
        for column in _check_columns(target, i, op, present)
    ]
    row = _row_with(target, present, new_columns)
    after = present + [name for name, _ in new_columns]
    if spec.expectations:
        preload_great_expectations()  # its import overlaps the checks below
    for i, op in enumerate(spec.operations):
        if isinstance(op, ChangeColumn):  # a rename's expressions are its column names, checked above
            _plan(target, f"operations.{i}.up", f"SELECT ({op.up}) FROM ({row}) so_row WHERE 1 = 0")
            _plan(target, f"operations.{i}.down", f"SELECT ({op.down}) FROM ({row}) so_row WHERE 1 = 0")
        elif isinstance(op, SplitColumn | MergeColumns):
            _check_move(target, i, op, present, new_columns)
        elif not isinstance(op, ColumnOperation):
            _check_constraint(
                target, i, op, present, after, row, [ix.columns for ix in spec.indexes], dict(new_columns)
            )
    check_expectations(spec, after)
    _check_version_schema(target, spec)
    return target


def _check_version_schema(target: Target, spec: ExpandContractSpec) -> None:
    """An engine that can hold a version view, and a schema Shiftover creates (a rollback drops it)."""
    if spec.version_schema is None:
        return
    dialect = schema_dialect(target.engine)
    refusal = dialect.online_refusal("version_schema")
    if refusal:
        raise SpecError("version_schema", f"refused on {dialect.name}: {refusal}")
    with target.engine.connect() as conn:
        if dialect.version_schema_exists(conn, spec.version_schema):
            raise SpecError(
                "version_schema",
                f"{spec.version_schema!r} exists already: the change creates it and a rollback or contract drops "
                "it; name a new one",
            )


def _renamed_already(spec: ExpandContractSpec) -> bool:
    """The table carries its new name and a view its old one: expand has only leftovers to clear."""
    assert spec.rename is not None
    insp, schema = inspect_endpoint(spec.database, "database"), spec.database.schema_name
    return spec.rename.to in insp.get_table_names(schema=schema) and spec.database.table in insp.get_view_names(
        schema=schema
    )


def _check_constraint(
    target: Target,
    i: int,
    op: Operation,
    present: list[str],
    after: list[str],
    row: str,
    spec_indexes: list[tuple[str, ...]],
    new_types: dict[str, str],
) -> None:
    """An index's or constraint's columns, name and expression, and whether the engine can add it online."""
    if isinstance(op, DropColumn):
        _check_drop(target, i, op, present)
        return
    refusal = schema_dialect(target.engine).online_refusal(op.op)
    if refusal:
        raise SpecError(f"operations.{i}.op", f"{op.op} is refused on this engine: {refusal}")
    if isinstance(op, RenameTable):
        insp = sa.inspect(target.engine)
        names = set(insp.get_table_names(schema=target.schema)) | set(insp.get_view_names(schema=target.schema))
        with target.engine.connect() as conn:  # a re-run after a crash takes its own stand-in over
            ours = schema_dialect(target.engine).is_rename_placeholder(conn, table_rename(target, op.to))
        if op.to in names and not ours:
            raise SpecError(f"operations.{i}.to", f"a table or view named {op.to!r} exists already")
    elif isinstance(op, CreateIndex):
        missing = [c for c in op.columns if c not in after]
        if missing:
            raise SpecError(
                f"operations.{i}.columns", f"no column(s) {missing} in table {target.table!r} (its columns: {after})"
            )
        with target.engine.connect() as conn:
            taken = schema_dialect(target.engine).index_name_taken(conn, target.qualified, target.quote(op.name))
        if op.name in index_names(target) or taken:
            raise SpecError(
                f"operations.{i}.name",
                f"an index named {op.name!r} exists already (on {target.table!r}, or elsewhere where the engine "
                "does not scope index names per table): the build would skip it and a rollback drop it",
            )
    elif isinstance(op, AddCheck):
        if op.name in check_names(target):
            raise SpecError(f"operations.{i}.name", f"table {target.table!r} has a constraint {op.name!r} already")
        _plan(
            target,
            f"operations.{i}.expression",
            f"SELECT count(*) FROM ({row}) so_row WHERE NOT ({op.expression}) AND 1 = 0",
        )
    elif isinstance(op, AddForeignKey):
        _check_foreign_key(target, i, op, after, spec_indexes)
    elif isinstance(op, SetNotNull):
        if op.column not in after:
            raise SpecError(
                f"operations.{i}.column", f"no column {op.column!r} in table {target.table!r} (its columns: {after})"
            )
        if op.column in present and not is_nullable(target, op.column):
            raise SpecError(
                f"operations.{i}.column",
                f"column {op.column!r} is NOT NULL already (a rollback would make it nullable)",
            )
        type_ = new_types.get(op.column) or _type_of(target, op.column)
        refusal = schema_dialect(target.engine).not_null_refusal(type_)
        if refusal:
            raise SpecError(f"operations.{i}.column", f"column {op.column!r} ({type_}): {refusal}")


def _type_of(target: Target, column: str) -> str:
    for c in sa.inspect(target.engine).get_columns(target.table, schema=target.schema):
        if c["name"] == column:
            return str(c["type"])
    raise LookupError(column)


def _check_drop(target: Target, i: int, op: DropColumn, present: list[str]) -> None:
    """The column is there and no index or foreign key uses it (dropping it would change those too:
    PostgreSQL drops them with it, SQLite refuses, MariaDB rebuilds the index)."""
    if op.column not in present:
        raise SpecError(f"operations.{i}.column", f"no column {op.column!r} in table {target.table!r}")
    insp = sa.inspect(target.engine)
    users = [
        str(ix["name"])
        for ix in insp.get_indexes(target.table, schema=target.schema)
        if op.column in ix["column_names"]
    ]
    users += [
        str(f["name"])
        for f in insp.get_foreign_keys(target.table, schema=target.schema)
        if op.column in f["constrained_columns"]
    ]
    if users:
        raise SpecError(
            f"operations.{i}.column",
            f"column {op.column!r} is used by {users}: dropping it would drop or rebuild those too; drop them first",
        )


def _check_foreign_key(
    target: Target, i: int, op: AddForeignKey, after: list[str], spec_indexes: list[tuple[str, ...]]
) -> None:
    """Its columns exist (or are added), the referenced table and columns exist, its name is new,
    and, where the engine needs one, an index leads with its columns (existing or in this spec)."""
    missing = [c for c in op.columns if c not in after]
    if missing:
        raise SpecError(f"operations.{i}.columns", f"no column(s) {missing} in table {target.table!r}")
    insp = sa.inspect(target.engine)
    if not insp.has_table(op.ref_table, schema=target.schema):
        raise SpecError(f"operations.{i}.ref_table", f"no table {op.ref_table!r}")
    ref_columns = [c["name"] for c in insp.get_columns(op.ref_table, schema=target.schema)]
    missing = [c for c in op.ref_columns if c not in ref_columns]
    if missing:
        raise SpecError(f"operations.{i}.ref_columns", f"no column(s) {missing} in table {op.ref_table!r}")
    with target.engine.connect() as conn:
        taken = schema_dialect(target.engine).foreign_key_name_taken(conn, op.name)
    if op.name in foreign_key_names(target) | index_names(target) or taken:
        raise SpecError(f"operations.{i}.name", f"table {target.table!r} has a key or index {op.name!r} already")
    indexed = [tuple(ix["column_names"]) for ix in insp.get_indexes(target.table, schema=target.schema)]
    indexed += [tuple(pk) for pk in [insp.get_pk_constraint(target.table, schema=target.schema)["constrained_columns"]]]
    leads = any(tuple(cols[: len(op.columns)]) == op.columns for cols in indexed + spec_indexes)
    if schema_dialect(target.engine).foreign_key_needs_index and not leads:
        raise SpecError(
            f"operations.{i}.columns",
            f"no index leads with ({', '.join(op.columns)}): this engine's ALTER would build one as part of the "
            "foreign key (and keep it after a rollback). Add a create_index on those columns to the spec: it is "
            "built online in the expand stage, before the constrain stage adds the key",
        )


def _check_columns(target: Target, i: int, op: ColumnOperation, present: list[str]) -> list[tuple[str, str]]:
    """Operation ``i``'s old columns are there, its new ones are not, their types (and default)
    parse; returns the new columns' names and types."""
    table, dialect = target.table, schema_dialect(target.engine)
    for j, old in enumerate(op.replaced):
        if old not in present:
            field = f"operations.{i}.columns.{j}" if isinstance(op, MergeColumns) else f"operations.{i}.column"
            raise SpecError(field, f"no column {old!r} in table {table!r} (its columns: {present})")
    added = []
    for j, (new, type_) in enumerate(_new_columns_of(op)):
        new_field = _new_field(i, j, op)
        if new in present:
            raise SpecError(
                new_field,
                f"table {table!r} has a column {new!r} already: expand would take it over and a rollback drop it. "
                "Name a new column (if an earlier run of this change added it and stopped before its expand stage "
                "was recorded, `shiftover rollback` on this spec removes it)",
            )
        type_field = f"operations.{i}.into.{j}.type" if isinstance(op, SplitColumn) else f"operations.{i}.type"
        _plan(target, type_field, f"SELECT {dialect.typed('NULL', type_)}")
        added.append((new, type_))
    if isinstance(op, AddColumn) and op.default is not None:
        _plan(target, f"operations.{i}.default", f"SELECT {dialect.typed(op.default, op.type)}")
    return added


def _new_columns_of(op: ColumnOperation) -> list[tuple[str, str]]:
    if isinstance(op, SplitColumn):
        return [(c.name, c.type) for c in op.into]
    return [(op.created[0], op.type)]


def _new_field(i: int, j: int, op: ColumnOperation) -> str:
    if isinstance(op, SplitColumn):
        return f"operations.{i}.into.{j}.name"
    return f"operations.{i}.column" if isinstance(op, AddColumn) else f"operations.{i}.to"


def _check_move(
    target: Target, i: int, op: SplitColumn | MergeColumns, present: list[str], new_columns: list[tuple[str, str]]
) -> None:
    """A split's or merge's expressions plan over the row, and each reads what the sync triggers
    need it to: every ``up`` reads every old column of the operation and none of its new ones (a
    write through an old column it ignores would never reach the new side), every ``down`` every
    new column and none of the old ones. Whether an expression reads a column is asked of the
    engine: it is planned over the row without that column."""
    olds, news = list(op.replaced), list(op.created)
    if isinstance(op, SplitColumn):
        expressions = [(f"operations.{i}.into.{j}.up", c.up, "up") for j, c in enumerate(op.into)]
        expressions.append((f"operations.{i}.down", op.down, "down"))
    else:
        expressions = [(f"operations.{i}.up", op.up, "up")]
        expressions += [(f"operations.{i}.down.{c}", op.down[c], "down") for c in op.columns]
    for field, expr, way in expressions:
        _plan(target, field, f"SELECT ({expr}) FROM ({_row_with(target, present, new_columns)}) so_row WHERE 1 = 0")
        reads, never = (olds, news) if way == "up" else (news, olds)
        for column in reads:
            if _plans_without(target, expr, present, new_columns, {column}):
                side = "old" if way == "up" else "new"
                other = "new columns" if way == "up" else "old column(s)"
                raise SpecError(
                    field,
                    f"{way} does not read the {side} column {column!r}: a write through {column!r} would never "
                    f"reach the {other}, and contract would lose it",
                )
        if not _plans_without(target, expr, present, new_columns, set(never)):
            side = "new" if way == "up" else "old"
            raise SpecError(
                field,
                f"{way} reads the {side} column(s) {never} of its own operation: {way} computes the "
                f"{'new' if way == 'up' else 'old'} side from the {'old' if way == 'up' else 'new'} columns only "
                "(the sync triggers set one side from the other)",
            )


def _plans_without(
    target: Target, expr: str, present: list[str], new_columns: list[tuple[str, str]], without: set[str]
) -> bool:
    """True when the engine plans ``expr`` over the row without the columns ``without`` (so it does
    not read them)."""
    row = _row_with(target, [c for c in present if c not in without], [c for c in new_columns if c[0] not in without])
    try:
        _plan(target, "", f"SELECT ({expr}) FROM ({row}) so_row WHERE 1 = 0")
    except SpecError:
        return False
    return True


def _row_with(target: Target, present: list[str], new_columns: list[tuple[str, str]]) -> str:
    """The table's rows as they look after expand: every column, the new ones NULL of their type."""
    dialect = schema_dialect(target.engine)
    fields = [target.quote(c) for c in present]
    fields += [f"{dialect.typed('NULL', type_)} AS {target.quote(name)}" for name, type_ in new_columns]
    return f"SELECT {', '.join(fields)} FROM {target.qualified}"


def _plan(target: Target, field: str, sql: str) -> None:
    """Have the engine parse and plan ``sql`` (nothing is changed); its refusal names ``field``."""
    try:
        with target.engine.connect() as conn:
            run_literal(conn, sql).all()
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise SpecError(field, f"{schema_dialect(target.engine).name} refuses it: {reason}") from None
