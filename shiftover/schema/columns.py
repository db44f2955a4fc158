"""The DDL steps of an expand/contract change, each a plain function over an engine.

expand: new columns added nullable (instant on every engine here) -> sync: two-way triggers per
move (one old and one new column for a change or rename, one old and several new for a split,
several old and one new for a merge) -> (backfill, validate: ``backfill.py``, ``validate.py``) -> contract:
``stop_sync`` makes the old columns nullable where an insert would have to name them and swaps the
two-way triggers for forward-only ones (``<trigger>_fwd``: a write by an application instance still
on the old version, to the old columns, still reaches the new ones as up(old); a write through the
new columns no longer touches the old ones), then ``drop_old_columns`` drops the forward triggers
and the old columns. Before contract, ``rollback_expansion`` drops the constraints and indexes
(``constraints.py``), the triggers and the new columns, leaving the table as it was.
Every statement runs under ``locking.run_ddl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.schema.constraints import drop_indexes, planned_constraint_ddl, remove_constraints
from shiftover.schema.engines import SyncGroup, TableRename, over_row, schema_dialect
from shiftover.schema.locking import DdlReport, run_ddl
from shiftover.schema.spec import ColumnMove, ExpandContractSpec

_MAX_TRIGGER = 55  # leaves room for _fwd_ins/_fwd_upd under MySQL's 64 and PostgreSQL's 63
_MAX_NAME = 63  # PostgreSQL's limit; MySQL's is 64


@dataclass(frozen=True)
class Target:
    """Where a schema change happens: the engine, the table and how to name things in it."""

    engine: Engine
    table: str
    schema: str | None
    key: tuple[str, ...]

    @classmethod
    def of(cls, engine: Engine, spec: ExpandContractSpec) -> Target:
        return cls(engine, spec.database.table, spec.database.schema_name, spec.key)

    def quote(self, name: str) -> str:
        return str(self.engine.dialect.identifier_preparer.quote(name))

    @property
    def qualified(self) -> str:
        return f"{self.quote(self.schema)}.{self.quote(self.table)}" if self.schema else self.quote(self.table)

    def ddl_mutex(self) -> AbstractContextManager[None]:
        """The lock a run's DDL and a rollback's take (``SchemaDialect.ddl_mutex``), named after the
        table as the spec names it (a renamed table keeps its lock: a view holds the name)."""
        return schema_dialect(self.engine).ddl_mutex(self.engine, self.schema, self.table)

    def column_names(self) -> list[str]:
        return [c["name"] for c in sa.inspect(self.engine).get_columns(self.table, schema=self.schema)]


def new_columns(spec: ExpandContractSpec) -> list[tuple[str, str, str | None]]:
    """The columns expand adds: (name, SQL type, default), the moves' new columns first."""
    moved = [(n.name, n.type, None) for m in spec.moves for n in m.news]
    return moved + [(a.column, a.type, a.default) for a in spec.additions]


def trigger_base(table: str, move: ColumnMove) -> str:
    return f"so_sync_{table}_{move.news[0].name}"[:_MAX_TRIGGER]


def sync_group(target: Target, move: ColumnMove, columns: list[str]) -> SyncGroup:
    """The trigger's view of ``move``: quoted names, each expression over the row being written."""
    quoted = [target.quote(c) for c in columns]
    return SyncGroup(
        table=target.qualified,
        key=tuple(target.quote(k) for k in target.key),
        olds=tuple(target.quote(c) for c in move.old_names),
        news=tuple(target.quote(c) for c in move.new_names),
        ups=tuple(over_row(n.up, quoted) for n in move.news),
        downs=tuple(over_row(o.down, quoted) for o in move.olds),
        trigger=trigger_base(target.table, move),
        schema_prefix=f"{target.quote(target.schema)}." if target.schema else "",
        quote=target.quote,
    )


def sync_groups(target: Target, spec: ExpandContractSpec, columns: list[str]) -> list[SyncGroup]:
    """The trigger groups ``install_sync`` creates: one per move, none under ``sync: application``."""
    if spec.sync == "application":
        return []
    return [sync_group(target, m, columns) for m in spec.moves]


def expand(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Add every new column, nullable; columns already there (a re-run) are skipped."""
    dialect = schema_dialect(target.engine)
    present = set(target.column_names())
    wanted = new_columns(spec)
    statements = [
        dialect.add_column(target.qualified, target.quote(name), type_, default, spec.lock.timeout_ms)
        for name, type_, default in wanted
        if name not in present
    ]
    return run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)


def tables_and_views(target: Target) -> tuple[set[str], set[str]]:
    insp = sa.inspect(target.engine)
    return set(insp.get_table_names(schema=target.schema)), set(insp.get_view_names(schema=target.schema))


def renamed(target: Target, name: str) -> str:
    return f"{target.quote(target.schema)}.{target.quote(name)}" if target.schema else target.quote(name)


def table_rename(target: Target, to: str) -> TableRename:
    """The names renaming ``target``'s table to ``to`` uses, its staging names included."""
    return TableRename(
        table=target.qualified,
        new_table=renamed(target, to),
        old_name=target.quote(target.table),
        new_name=target.quote(to),
        staging=renamed(target, f"so_view_{target.table}"[:_MAX_NAME]),
        parked=renamed(target, f"so_parked_{target.table}"[:_MAX_NAME]),
        to=to,
        schema=target.schema,
    )


def rename_table(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """``rename_table``: the table renamed, a view of the old name in its place. When that is done
    already, only what a crash may have left of the staging is dropped."""
    report = report or DdlReport()
    if spec.rename is None:
        return report
    dialect = schema_dialect(target.engine)
    names = table_rename(target, spec.rename.to)
    tables, _ = tables_and_views(target)
    if spec.rename.to in tables:
        with target.engine.connect() as conn:
            statements = dialect.rename_leftovers(conn, names)
    else:
        statements = dialect.rename_table(names)
    return run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)


def install_sync(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Two-way sync triggers for every move (change, rename, split, merge; idempotent), then the
    spec's version view, whose writes the triggers carry to the old columns. ``sync: application``
    installs nothing: ``ColumnWrites`` writes both sides itself."""
    dialect = schema_dialect(target.engine)
    columns = target.column_names()
    statements = [s for g in sync_groups(target, spec, columns) for s in dialect.sync_install(g)]
    statements += version_view(target, spec, columns)
    return run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)


def version_view(target: Target, spec: ExpandContractSpec, columns: list[str]) -> list[str]:
    """``version_schema``'s view: the table's ``columns`` (as they are once expanded) but those
    contract drops, so the new code sees the table as it will be after contract."""
    if spec.version_schema is None:
        return []
    dialect = schema_dialect(target.engine)
    dropped = set(dropped_columns(spec))
    shown = [target.quote(c) for c in columns if c not in dropped]
    with target.engine.connect() as conn:
        base = target.schema or dialect.current_schema(conn)
    table = f"{target.quote(base)}.{target.quote(target.table)}"
    return dialect.version_view(target.quote(spec.version_schema), target.quote(target.table), table, shown)


def remove_version_view(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Drop ``version_schema``'s view, and the schema when nothing else is in it."""
    if spec.version_schema is None:
        return report or DdlReport()
    with target.engine.connect() as conn:
        statements = schema_dialect(target.engine).drop_version_view(
            conn, spec.version_schema, target.table, target.quote
        )
    return run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)


def all_sync_removes(target: Target, spec: ExpandContractSpec, columns: list[str]) -> list[str]:
    """Drops (IF EXISTS) of every sync trigger a move may have, whatever the phase: the two-way
    ones and the forward ones ``stop_sync`` puts in their place."""
    dialect = schema_dialect(target.engine)
    groups = [sync_group(target, m, columns) for m in spec.moves]
    return [s for g in groups for s in dialect.sync_remove(g) + dialect.sync_forward_remove(g)]


def remove_sync(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Drop the sync triggers, two-way or forward (idempotent): from here on, a write to one column no
    longer reaches the other. Under ``sync: application`` there are none, and the drops (IF EXISTS)
    only remove any an earlier run with triggers left."""
    statements = all_sync_removes(target, spec, target.column_names())
    return run_ddl(target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report)


def stop_sync_triggers(target: Target, spec: ExpandContractSpec, columns: list[str]) -> list[str]:
    """stop_sync's trigger statements: each move's two-way triggers swapped for forward-only ones
    (``SchemaDialect.sync_to_forward``); under ``sync: application`` only drops of any an earlier
    run with triggers left, forward ones included."""
    if spec.sync == "application":
        return all_sync_removes(target, spec, columns)
    dialect = schema_dialect(target.engine)
    return [s for g in sync_groups(target, spec, columns) for s in dialect.sync_to_forward(g)]


def stop_sync(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Contract's first step: the columns contract drops stop being required, then the two-way sync
    triggers make way for forward-only ones. From here on the new version writes the new columns
    alone and nothing fills the old ones, yet they stay until the last step: one NOT NULL with no
    default would refuse every insert made through the new columns alone, so it becomes nullable
    first (SQLite cannot, see its dialect). An application instance still on the old version (a pod
    not yet drained) may still write the old columns: the forward trigger carries such a write to
    the new columns, as up(old), so it is not lost when the old columns go. All in one transaction on
    PostgreSQL and SQLite (no moment with neither trigger); on MariaDB, where each DDL statement
    commits alone, the forward triggers are created before the two-way ones are dropped (both run for
    a moment, never neither). Idempotent: a re-run installs the same forward triggers. Under ``sync:
    application`` nothing is installed (``ColumnWrites`` writes both sides)."""
    statements = release_dropped_columns(target, spec) + stop_sync_triggers(target, spec, target.column_names())
    return run_ddl(
        target.engine, statements, spec.lock, table=target.table, schema=target.schema, report=report, together=True
    )


def release_dropped_columns(target: Target, spec: ExpandContractSpec, *, planning: bool = False) -> list[str]:
    """The statements making each column contract drops nullable where it is NOT NULL with no
    default (an insert would have to name it), read from the live table. ``planning``: where the
    engine cannot (SQLite), a ``--`` line saying what that leaves, for ``shiftover plan --ddl``."""
    dialect = schema_dialect(target.engine)
    present = {c["name"]: c for c in sa.inspect(target.engine).get_columns(target.table, schema=target.schema)}
    required = [
        n
        for n in dropped_columns(spec)
        if n in present and not present[n]["nullable"] and present[n]["default"] is None
    ]
    statements: list[str] = []
    with target.engine.connect() as conn:
        for name in required:
            made = dialect.make_nullable(conn, target.qualified, target.quote(name), spec.lock.timeout_ms)
            if not made and planning:
                made = [
                    f"-- {name} stays NOT NULL ({dialect.name} cannot drop NOT NULL online, and its triggers run "
                    "after the NOT NULL check): from expand until drop_old_columns an insert that does not name it "
                    "fails; ColumnWrites names both sides"
                ]
            statements += made
    return statements


def drop_old_columns(target: Target, spec: ExpandContractSpec, report: DdlReport | None = None) -> DdlReport:
    """Contract's last step: the forward triggers, then the old columns go, and every
    ``drop_column``'s, and a renamed table's view of its old name (irreversible). The triggers go
    first (a trigger reading a dropped column would fail every write; SQLite refuses to drop a
    column a trigger names): on PostgreSQL and SQLite in the columns' transaction; on MariaDB, where
    each statement commits alone, under ``LOCK TABLES ... WRITE`` held from before the trigger drops
    to after the column drops (``run_ddl``'s ``hold_table``), so no write to an old column lands
    between the two to be lost with the column. After the drop such a write fails on the missing
    column."""
    if spec.rename is not None:
        view = schema_dialect(target.engine).drop_view(target.qualified)
        return run_ddl(target.engine, [view], spec.lock, table=spec.rename.to, schema=target.schema, report=report)
    # the table is the new version now: code on the version schema's search_path reaches it directly
    report = remove_version_view(target, spec, report)
    triggers = all_sync_removes(target, spec, target.column_names())
    return _drop_columns(target, spec, dropped_columns(spec), report, first=triggers, held=True)


def dropped_columns(spec: ExpandContractSpec) -> list[str]:
    """What contract drops: each move's old columns, then each ``drop_column``'s."""
    return [name for m in spec.moves for name in m.old_names] + [d.column for d in spec.drops]


def rollback_expansion(
    target: Target, spec: ExpandContractSpec, report: DdlReport | None = None, *, constrained: bool = True
) -> DdlReport:
    """Before contract: drop the constraints and indexes, the triggers, then the new columns; the old
    columns were kept in step throughout, so the table is as it was, holding every write made through
    either column. ``constrained``: the constrain stage may have run (its NOT NULLs are undone)."""
    if spec.rename is not None:
        return _unrename(target, spec, report)
    if constrained:
        report = remove_constraints(target, spec, report)
    report = drop_indexes(target, spec, report)
    report = remove_version_view(target, spec, report)  # before the new columns it shows
    report = remove_sync(target, spec, report)  # two-way or, were it ever run, forward
    return _drop_columns(target, spec, [name for name, _, _ in new_columns(spec)], report)


def _unrename(target: Target, spec: ExpandContractSpec, report: DdlReport | None) -> DdlReport:
    assert spec.rename is not None
    dialect = schema_dialect(target.engine)
    names = table_rename(target, spec.rename.to)
    tables, _ = tables_and_views(target)
    if spec.rename.to not in tables or target.table in tables:  # never renamed (or renamed back already)
        with target.engine.connect() as conn:
            statements = dialect.rename_leftovers(conn, names)
    else:
        statements = dialect.unrename_table(names)
    return run_ddl(target.engine, statements, spec.lock, table=spec.rename.to, schema=target.schema, report=report)


def _drop_columns(
    target: Target,
    spec: ExpandContractSpec,
    names: list[str],
    report: DdlReport | None,
    first: Sequence[str] = (),
    *,
    held: bool = False,
) -> DdlReport:
    """Drop ``names`` (those present), after the statements ``first``, in one transaction where the
    engine allows it (``run_ddl``'s ``together``); ``held``: elsewhere under a write lock on the
    table from the first statement to the last (``run_ddl``'s ``hold_table``)."""
    dialect = schema_dialect(target.engine)
    present = set(target.column_names())
    statements = [*first] + [
        dialect.drop_column(target.qualified, target.quote(n), spec.lock.timeout_ms) for n in names if n in present
    ]
    return run_ddl(
        target.engine,
        statements,
        spec.lock,
        table=target.table,
        schema=target.schema,
        report=report,
        together=True,
        hold_table=target.qualified if held else None,
    )


def planned_ddl(target: Target, spec: ExpandContractSpec) -> dict[str, list[str]]:
    """Every statement the change would run, by stage, read from the live table without changing it
    (``shiftover plan --ddl``): what the operator reviews before the triggers go live."""
    dialect = schema_dialect(target.engine)
    if spec.rename is not None:
        refusal = dialect.online_refusal("rename_table")
        if refusal:
            return {"expand": [f"-- rename_table refused: {refusal}"]}
        names = table_rename(target, spec.rename.to)
        return {
            "expand": dialect.rename_table(names),
            "drop_old_columns": [dialect.drop_view(target.qualified)],
            "rollback": dialect.unrename_table(names),
        }
    present = target.column_names()
    wanted = new_columns(spec)
    columns = present + [name for name, _, _ in wanted if name not in present]
    installed = sync_groups(target, spec, columns)
    triggerless = (
        [
            "-- sync: application: no triggers; only writes through ColumnWrites keep old and new in step. Rows "
            "other writers change before validate are put in step by the validate stage first (one more backfill "
            "pass, new = up(old), its row count in the stage's report); after validate nothing catches them"
        ]
        if spec.sync == "application"
        else []
    )
    leftovers = ["-- sync: application: no triggers to drop; these drop any an earlier run left"] if triggerless else []
    forward_note = (
        [
            "-- the two-way triggers make way for forward-only ones (_fwd): until drop_old_columns a write "
            "to an old column (an instance still on the old version) still sets new = up(old); a write "
            "through the new columns no longer touches the old ones"
            + (
                ""
                if dialect.transactional_ddl or dialect.begin_transaction_sql
                else "; created before the "
                "two-way ones are dropped (each DDL statement commits alone here): both run for a moment, never neither"
            )
        ]
        if installed
        else []
    )

    def drops(names: list[str]) -> list[str]:
        return [dialect.drop_column(target.qualified, target.quote(n), spec.lock.timeout_ms) for n in names]

    def held(statements: list[str]) -> list[str]:  # as run_ddl's hold_table runs them
        pair = dialect.table_write_lock(target.qualified)
        return [pair[0], *statements, pair[1]] if pair and statements else statements

    extra = planned_constraint_ddl(target, spec)
    vs = spec.version_schema
    planned_view_drop = (
        [f"DROP VIEW IF EXISTS {target.quote(vs)}.{target.quote(target.table)}", f"-- then {vs} itself, if empty"]
        if vs
        else []
    )
    undo_indexes = [
        dialect.drop_index(target.qualified, target.quote(i.name), spec.lock.timeout_ms) for i in spec.indexes
    ]
    return {
        "expand": [
            dialect.add_column(target.qualified, target.quote(n), t, d, spec.lock.timeout_ms) for n, t, d in wanted
        ]
        + extra["indexes"],
        "sync": triggerless
        + [s for p in installed for s in dialect.sync_install(p)]
        + version_view(target, spec, columns),
        **({"constrain": extra["constrain"]} if spec.constraints else {}),
        "stop_sync": release_dropped_columns(target, spec, planning=True)
        + leftovers
        + forward_note
        + stop_sync_triggers(target, spec, columns),
        "drop_old_columns": planned_view_drop
        + held(all_sync_removes(target, spec, columns) + drops(dropped_columns(spec))),
        "rollback": extra["undo"]
        + undo_indexes
        + planned_view_drop
        + leftovers
        + all_sync_removes(target, spec, columns)
        + drops([n for n, _, _ in wanted]),
    }
