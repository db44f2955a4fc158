"""An expand/contract spec: one live table, a list of operations, changed in place.

``kind: expand_contract`` beside the table move's spec. Each operation that moves data has an ``up``
(old -> new) and a ``down`` (new -> old) SQL expression in the table's own dialect, over the row's
column names. Operations not supported yet are refused by name, naming the spec field.

``split_column`` (one old column into several new ones, an ``up`` each and one ``down`` rebuilding
the old one) and ``merge_columns`` (several old columns into one new one, one ``up`` and a ``down``
per old column) move data the same way: every data-moving operation becomes a ``ColumnMove`` (old
columns, new columns, their expressions), which the sync triggers, backfill and validation walk.

Besides the column operations, four operations change no data and move none: ``create_index``
(built online in the expand stage, beside the new columns), ``add_check``, ``set_not_null`` and
``add_foreign_key`` (enforced in the ``constrain`` stage, after the backfill and validation; see
``shiftover.schema.constraints`` for why there). Each is undone by the rollback before contract.
``drop_column`` runs only in the last contract step, after both approvals (irreversible);
``rename_table`` renames in expand behind a view of the old name, dropped in that same last step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shiftover.errors import SpecError
from shiftover.spec import (
    ApprovalSpec,
    Endpoint,
    Expectation,
    KeyColumns,
    PaceSpec,
    read_spec_file,
    spec_error,
)

KIND = "expand_contract"
# Operations in the issue that this version refuses, with what to do instead.
NOT_YET: dict[str, str] = {
    "add_unique": "use create_index with unique: true (built online; duplicates are counted first)",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_NAME = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,59}$")


class ChangeColumn(_Model):
    """Replace ``column`` by ``to`` (a new type, a new name or both): ``up`` computes the new value from
    the row, ``down`` the old one from the new (the sync triggers need both)."""

    op: Literal["change_column"]
    column: Annotated[str, _NAME]
    to: Annotated[str, _NAME]
    type: str  # the new column's SQL type, as the engine spells it
    up: str
    down: str
    reversible: bool = False  # claims down(up(x)) == x: validation checks it on every row

    @model_validator(mode="after")
    def _distinct(self) -> ChangeColumn:
        if self.to == self.column:
            raise ValueError("`to` must differ from `column`: both columns live side by side until contract")
        return self

    @property
    def created(self) -> tuple[str, ...]:
        return (self.to,)

    @property
    def replaced(self) -> tuple[str, ...]:
        return (self.column,)

    def as_move(self) -> ColumnMove:
        return ColumnMove(
            self.op,
            (OldColumn(self.column, self.down),),
            (NewColumn(name=self.to, type=self.type, up=self.up),),
            self.reversible,
        )


class RenameColumn(_Model):
    """A rename is a change of name only: the new column is the old one, both ways."""

    op: Literal["rename_column"]
    column: Annotated[str, _NAME]
    to: Annotated[str, _NAME]
    type: str  # the column's SQL type (the new column is created with it)

    def as_change(self) -> ChangeColumn:
        return ChangeColumn(
            op="change_column",
            column=self.column,
            to=self.to,
            type=self.type,
            up=self.column,
            down=self.to,
            reversible=True,
        )

    @property
    def created(self) -> tuple[str, ...]:
        return (self.to,)

    @property
    def replaced(self) -> tuple[str, ...]:
        return (self.column,)

    def as_move(self) -> ColumnMove:
        return self.as_change().as_move()


class NewColumn(_Model):
    """One column ``split_column`` creates: its SQL type and its ``up`` over the old column."""

    name: Annotated[str, _NAME]
    type: str
    up: str


class SplitColumn(_Model):
    """Replace ``column`` by the columns ``into`` (e.g. ``full_name`` -> ``first_name``, ``last_name``):
    each new column's ``up`` reads the old one, and ``down`` rebuilds the old one from every new one."""

    op: Literal["split_column"]
    column: Annotated[str, _NAME]
    into: Annotated[tuple[NewColumn, ...], Field(min_length=2)]
    down: str
    reversible: bool = False  # claims down(up(x)) == x: validation checks it on every row

    @model_validator(mode="after")
    def _distinct(self) -> SplitColumn:
        names = [c.name for c in self.into]
        if len(set(names)) != len(names):
            raise ValueError("`into` names a column twice")
        if self.column in names:
            raise ValueError("`into` must not name `column`: both sides live side by side until contract")
        return self

    @property
    def created(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.into)

    @property
    def replaced(self) -> tuple[str, ...]:
        return (self.column,)

    def as_move(self) -> ColumnMove:
        return ColumnMove(self.op, (OldColumn(self.column, self.down),), self.into, self.reversible)


class MergeColumns(_Model):
    """Replace ``columns`` by one column ``to`` (e.g. ``first_name``, ``last_name`` -> ``full_name``):
    ``up`` reads the old columns, and ``down`` gives each old column (by name) from the new one."""

    op: Literal["merge_columns"]
    columns: Annotated[tuple[Annotated[str, _NAME], ...], Field(min_length=2)]
    to: Annotated[str, _NAME]
    type: str
    up: str
    down: dict[str, str]  # old column -> its expression over the new one
    reversible: bool = False  # claims down(up(x)) == x: validation checks it on every row

    @model_validator(mode="after")
    def _distinct(self) -> MergeColumns:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("`columns` names a column twice")
        if self.to in self.columns:
            raise ValueError("`to` must differ from `columns`: both sides live side by side until contract")
        if set(self.down) != set(self.columns):
            missing, extra = sorted(set(self.columns) - set(self.down)), sorted(set(self.down) - set(self.columns))
            raise ValueError(
                f"`down` must give one expression per old column (missing: {missing or 'none'}, "
                f"not in `columns`: {extra or 'none'})"
            )
        return self

    @property
    def created(self) -> tuple[str, ...]:
        return (self.to,)

    @property
    def replaced(self) -> tuple[str, ...]:
        return self.columns

    def as_move(self) -> ColumnMove:
        olds = tuple(OldColumn(c, self.down[c]) for c in self.columns)
        return ColumnMove(self.op, olds, (NewColumn(name=self.to, type=self.type, up=self.up),), self.reversible)


@dataclass(frozen=True)
class OldColumn:
    """An old column of a move and its ``down``: its value computed from the new columns."""

    name: str
    down: str


@dataclass(frozen=True)
class ColumnMove:
    """Old columns replaced by new ones, kept in step both ways until contract (every data-moving
    operation is one): each new column's ``up`` reads the old ones, each old column's ``down`` the
    new ones. ``reversible`` claims down(up(old)) == old."""

    op: str
    olds: tuple[OldColumn, ...]
    news: tuple[NewColumn, ...]
    reversible: bool

    @property
    def old_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.olds)

    @property
    def new_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.news)


class AddColumn(_Model):
    """A new nullable column, with a constant default or none (instant on every engine)."""

    op: Literal["add_column"]
    column: Annotated[str, _NAME]
    type: str
    default: str | None = None  # a constant SQL literal, e.g. 0 or 'new'

    @property
    def created(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def replaced(self) -> tuple[str, ...]:
        return ()


class CreateIndex(_Model):
    """An index over ``columns`` (existing or new ones), built without blocking writers where the
    engine can (PostgreSQL ``CONCURRENTLY``, MariaDB ``ALGORITHM=INPLACE, LOCK=NONE``). ``unique``:
    duplicates are counted first and refused with a sample of their values."""

    op: Literal["create_index"]
    name: Annotated[str, _NAME]
    columns: Annotated[tuple[Annotated[str, _NAME], ...], Field(min_length=1)]
    unique: bool = False


class AddCheck(_Model):
    """A CHECK constraint ``name`` with a SQL boolean ``expression`` over the row's columns. Rows that
    violate it are counted first (the change is refused with their number and a sample of keys)."""

    op: Literal["add_check"]
    name: Annotated[str, _NAME]
    expression: str


class SetNotNull(_Model):
    """``column`` (existing, or one this change adds) becomes NOT NULL; NULL rows are counted first."""

    op: Literal["set_not_null"]
    column: Annotated[str, _NAME]


class AddForeignKey(_Model):
    """A foreign key ``name`` from ``columns`` to ``ref_columns`` of ``ref_table`` (same database and
    schema). Rows whose key has no referenced row (orphans) are counted first."""

    op: Literal["add_foreign_key"]
    name: Annotated[str, _NAME]
    columns: Annotated[tuple[Annotated[str, _NAME], ...], Field(min_length=1)]
    ref_table: Annotated[str, _NAME]
    ref_columns: Annotated[tuple[Annotated[str, _NAME], ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _paired(self) -> AddForeignKey:
        if len(self.columns) != len(self.ref_columns):
            raise ValueError("`columns` and `ref_columns` must name as many columns")
        return self


class DropColumn(_Model):
    """``column`` is dropped in the contract stage's last step, after both approvals: irreversible.
    Until then the column stays, written as before (a rollback leaves it untouched)."""

    op: Literal["drop_column"]
    column: Annotated[str, _NAME]


class RenameTable(_Model):
    """The table is renamed ``to`` in the expand stage and a view with its old name takes its place,
    so code using either name reads and writes the same rows; contract drops the view (after both
    approvals), a rollback before that drops it and renames the table back. The only operation of
    its spec (the others name the table)."""

    op: Literal["rename_table"]
    to: Annotated[str, _NAME]


ColumnOperation = ChangeColumn | RenameColumn | SplitColumn | MergeColumns | AddColumn
MoveOperation = ChangeColumn | RenameColumn | SplitColumn | MergeColumns
ConstraintOperation = AddCheck | SetNotNull | AddForeignKey
Operation = Annotated[
    ChangeColumn
    | RenameColumn
    | SplitColumn
    | MergeColumns
    | AddColumn
    | CreateIndex
    | AddCheck
    | SetNotNull
    | AddForeignKey
    | DropColumn
    | RenameTable,
    Field(discriminator="op"),
]
SUPPORTED = (
    "change_column, rename_column, split_column, merge_columns, add_column, create_index, add_check, "
    "set_not_null, add_foreign_key, drop_column, rename_table"
)


class LockSpec(_Model):
    """Every DDL statement waits at most ``timeout_ms`` for its lock, then retries after a backoff."""

    timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 500
    attempts: Annotated[int, Field(ge=1, le=1000)] = 20
    backoff_ms: Annotated[int, Field(ge=0)] = 200
    max_backoff_ms: Annotated[int, Field(ge=0)] = 5_000


class ColumnBackfillSpec(PaceSpec):
    """The column backfill's pace, with the table backfill's fields and meanings (``PaceSpec``):
    ``target_chunk_seconds`` steers the batch size toward that duration, ``nice_ratio`` rests after
    each batch that many times its duration; both retunable while it runs (``shiftover throttle``)."""


class ReadsSpec(_Model):
    """Canary steps for ``switch_reads``: the reads flag goes to each percentage of keys in turn, with
    shadow reads on, and waits ``soak_seconds`` before the next; a shadow mismatch recorded during a
    step, or fewer than ``min_shadow_reads`` shadow reads, stops the stage there
    (``shiftover.schema.canary``). Without this field one flip sends
    every key to the new columns."""

    canary_percent: Annotated[tuple[Annotated[float, Field(gt=0, le=100)], ...], Field(min_length=1)]
    soak_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0
    # shadow reads a step's gate must see: with none, no application read through ColumnReads and
    # the step would pass on no evidence; 0 lets it
    min_shadow_reads: Annotated[int, Field(ge=0)] = 1

    @field_validator("canary_percent")
    @classmethod
    def _rising_to_all(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"canary_percent must rise strictly, got {list(steps)}")
        if steps[-1] != 100:
            raise ValueError(f"canary_percent must end at 100 (every key reads the new columns), got {list(steps)}")
        return steps


class ExpandContractSpec(_Model):
    kind: Literal["expand_contract"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    database: Endpoint
    key: KeyColumns
    operations: tuple[Operation, ...]
    lock: LockSpec = LockSpec()
    backfill: ColumnBackfillSpec = ColumnBackfillSpec()
    approvals: ApprovalSpec = ApprovalSpec()
    # Great Expectations run by the validate stage on the changed table (shiftover.schema.expectations)
    expectations: tuple[Expectation, ...] = ()
    reads: ReadsSpec | None = None  # canary steps for switch_reads; none: one flip to the new columns
    # PostgreSQL: a schema of this name, created by sync and dropped by contract or rollback, holding a
    # view of the table as the new version sees it (pgroll's version schemas): code that sets
    # search_path to it (then the table's schema) uses the new columns without reading a flag
    version_schema: Annotated[str, _NAME] | None = None
    # how old and new columns are kept in step until contract: ``triggers`` (two-way sync triggers, every
    # writer) or ``application`` (no triggers: only writes through ColumnWrites; for servers that refuse
    # CREATE TRIGGER, e.g. MySQL/MariaDB with binary logging to a user without SUPER, error 1419)
    sync: Literal["triggers", "application"] = "triggers"
    # how long the old columns are kept, no longer written, after stop_sync before drop_old_columns may
    # run (and ask its approval): a soak in which the new version runs on the new columns alone while
    # the old values are still there to read back by hand (the table move's archive.retention_days)
    retention_hours: Annotated[float, Field(ge=0, le=8760)] = 24

    @model_validator(mode="after")
    def _coherent(self) -> ExpandContractSpec:
        if not self.operations:
            raise ValueError("at least one operation is needed")
        if self.version_schema is not None and self.sync == "application":
            raise ValueError(
                "version_schema does not go with sync: application (writes through its view reach the new "
                "columns only, and the sync triggers are what fill the old ones)"
            )
        renames = [op for op in self.operations if isinstance(op, RenameTable)]
        if renames and len(self.operations) > 1:
            raise ValueError("rename_table must be its spec's only operation (the others name the table)")
        if renames and renames[0].to == self.database.table:
            raise ValueError("rename_table's `to` must differ from the table's name")
        if renames and self.version_schema:
            raise ValueError("version_schema does not go with rename_table (its view of the old name is the version)")
        if self.version_schema is not None and self.version_schema == self.database.schema_name:
            raise ValueError("version_schema must differ from the table's own schema")
        columns = [op for op in self.operations if isinstance(op, ColumnOperation)]
        added = [name for op in columns for name in op.created]
        if len(set(added)) != len(added):
            raise ValueError("two operations create the same column")
        named = [op.name for op in self.operations if isinstance(op, CreateIndex | AddCheck | AddForeignKey)]
        if len(set(named)) != len(named):
            raise ValueError("two operations create an index or constraint of the same name")
        not_null = [op.column for op in self.operations if isinstance(op, SetNotNull)]
        if len(set(not_null)) != len(not_null):
            raise ValueError("two set_not_null operations name the same column")
        touched = [name for op in columns for name in op.replaced]
        if len(set(touched)) != len(touched):
            raise ValueError("two operations change the same column (their sync triggers would fight over it)")
        if set(touched) & set(added):
            raise ValueError(
                f"column(s) {sorted(set(touched) & set(added))} are both replaced and created by this change: "
                "old and new columns live side by side until contract"
            )
        if any(k in touched for k in self.key):
            raise ValueError(f"key column(s) {[k for k in self.key if k in touched]} cannot be changed in place")
        dropped = [op.column for op in self.drops]
        used = set(touched) | set(added) | set(self.key) | set(not_null)
        used |= {c for op in self.operations if isinstance(op, CreateIndex | AddForeignKey) for c in op.columns}
        if len(set(dropped)) != len(dropped) or used & set(dropped):
            raise ValueError(
                f"drop_column names {sorted(used & set(dropped)) or 'a column twice'}: a dropped column can be no key, "
                "changed, added, indexed or constrained by the same change"
            )
        return self

    @property
    def changes(self) -> tuple[ChangeColumn, ...]:
        """The operations that move data (renames included), as change_column."""
        return tuple(
            op.as_change() if isinstance(op, RenameColumn) else op
            for op in self.operations
            if isinstance(op, ChangeColumn | RenameColumn)
        )

    @property
    def moves(self) -> tuple[ColumnMove, ...]:
        """Every operation that moves data (change, rename, split, merge), as old and new columns."""
        return tuple(op.as_move() for op in self.operations if isinstance(op, MoveOperation))

    @property
    def moved_old_columns(self) -> tuple[str, ...]:
        """The old columns of every move, in operation order."""
        return tuple(c for m in self.moves for c in m.old_names)

    @property
    def moved_new_columns(self) -> tuple[str, ...]:
        """The new columns of every move, in operation order."""
        return tuple(c for m in self.moves for c in m.new_names)

    @property
    def additions(self) -> tuple[AddColumn, ...]:
        return tuple(op for op in self.operations if isinstance(op, AddColumn))

    @property
    def rename(self) -> RenameTable | None:
        return next((op for op in self.operations if isinstance(op, RenameTable)), None)

    @property
    def drops(self) -> tuple[DropColumn, ...]:
        return tuple(op for op in self.operations if isinstance(op, DropColumn))

    @property
    def indexes(self) -> tuple[CreateIndex, ...]:
        return tuple(op for op in self.operations if isinstance(op, CreateIndex))

    @property
    def constraints(self) -> tuple[ConstraintOperation, ...]:
        """The operations the ``constrain`` stage enforces, in spec order."""
        return tuple(op for op in self.operations if isinstance(op, AddCheck | SetNotNull | AddForeignKey))


def is_expand_contract(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def parse_expand_contract(data: dict[str, Any]) -> ExpandContractSpec:
    """Validate a spec dict; the first problem becomes a ``SpecError`` naming its field."""
    for i, op in enumerate(data.get("operations") or ()):
        name = op.get("op") if isinstance(op, dict) else None
        if name in NOT_YET:
            raise SpecError(f"operations.{i}.op", f"operation {name!r} is not supported yet ({NOT_YET[name]})")
    try:
        spec = ExpandContractSpec.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from None
    _check_expectation_shapes(spec)
    return spec


def _check_expectation_shapes(spec: ExpandContractSpec) -> None:
    """What can be told of ``expectations`` without the table or Great Expectations (its 3 s import):
    a snake_case ``expect_`` name, and no ``stages`` (only the validate stage runs them). The name
    against GX and the columns against the table are checked before any DDL (``check_change``)."""
    for i, exp in enumerate(spec.expectations):
        if not re.fullmatch(r"expect_[a-z0-9_]+", exp.type):
            raise SpecError(
                f"expectations.{i}.type",
                f"{exp.type!r} is no Great Expectations name (snake_case, e.g. expect_column_values_to_not_be_null)",
            )
        if exp.stages:
            raise SpecError(
                f"expectations.{i}.stages",
                "an expand_contract spec runs its expectations in the validate stage only: leave `stages` out",
            )


def _field_error(exc: ValidationError) -> SpecError:
    """``spec_error``, with an operation's fields named without the union member's tag
    (``operations.0.to``, not ``operations.0.change_column.to``) and an unknown ``op`` listed."""
    error, loc = spec_error(exc), [str(p) for p in exc.errors()[0]["loc"]]
    if exc.errors()[0]["type"] == "union_tag_invalid":
        return SpecError(f"{error.field}.op", f"unknown operation; supported: {SUPPORTED} ({error.problem})")
    if len(loc) > 2 and loc[0] == "operations":
        return SpecError(".".join(loc[:2] + loc[3:]), error.problem)
    return error


def is_expand_contract_file(path: str | Path) -> bool:
    """True when the YAML file at ``path`` declares ``kind: expand_contract`` (the CLI's dispatch)."""
    try:
        return is_expand_contract(read_spec_file(path))
    except (SpecError, OSError):
        return False  # the table move's loader reports it


def load_expand_contract(path: str | Path) -> ExpandContractSpec:
    data = read_spec_file(path)
    if not is_expand_contract(data):
        raise SpecError("kind", f"{path} is no expand_contract spec (kind: {KIND})")
    return parse_expand_contract(data)
