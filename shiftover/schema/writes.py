"""Writes of a row during an expand/contract change, to the old columns and the new in one statement.

``ColumnWrites`` is the write side of ``ColumnReads``: the dual-writer for applications that write
through Shiftover. The flag ``<name>:schema.writes`` names the shape the application passes its
values in: ``{"columns": "new"}`` the new columns, anything else the old ones (``writes_new()``,
read from the flag on every call). Each insert or update is ONE statement that writes both sides:
given old-shape values it also sets every new column of the moves they touch to ``up(old)``, given
new-shape values every old column to ``down(new)``, both computed by the database from the spec's
own SQL over the bound values, by the sync triggers' rewriting (``over_values``: a one-row derived
table naming each passed column after its value). In an UPDATE, a column the application did not
pass resolves to the stored row, as the trigger's ``NEW`` would give it. The computed columns are
assigned as the triggers assign them (the column's own conversion), so with triggers on the trigger
finds the row in step and leaves it; without them (``sync: application``) the rows written here stay
in step all the same.

Values in the wrong shape, columns outside the key, ``columns`` and the moves' sides, or an insert
missing a column of its side are refused with ``WriteShapeError`` before anything is written. A side
missing from the table (before expand, after contract) is ``MissingSideError``, never a half-write:
the one statement fails whole. The columns' types are read from the table once and again when a
write finds a column missing or fails.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.flags.client import FlagClient
from shiftover.schema.columns import Target
from shiftover.schema.engines import over_values, schema_dialect
from shiftover.schema.errors import MissingSideError, WriteShapeError
from shiftover.schema.plan import flag_key
from shiftover.schema.spec import ColumnMove, ExpandContractSpec

Values = Mapping[str, Any]


class ColumnWrites:
    """Inserts, updates and deletes rows of the spec's table for an application during the change.
    Thread-safe (the flag client is; the column types are cached under a lock).

    ``columns`` are other columns the application writes (written as passed, whatever the shape)."""

    def __init__(
        self, flags: FlagClient, spec: ExpandContractSpec, engine: Engine, *, columns: Sequence[str] = ()
    ) -> None:
        self.flags, self.engine = flags, engine
        self.flag = flag_key(spec.name, "writes")
        self.key = tuple(spec.key)
        self.moves: tuple[ColumnMove, ...] = spec.moves
        self.old_columns, self.new_columns = spec.moved_old_columns, spec.moved_new_columns
        self.columns = tuple(columns)
        self._target = Target.of(engine, spec)
        self._dialect = schema_dialect(engine)
        self._where = " AND ".join(f"{self._target.quote(k)} = :k{i}" for i, k in enumerate(self.key))
        self._lock = threading.Lock()
        self._types: dict[str, sa.types.TypeEngine[Any]] = {}

    def writes_new(self) -> bool:
        """Whether the application passes new-shape values now (the writes flag is ``{"columns": "new"}``)."""
        value = self.flags.get(self.flag)
        return isinstance(value, Mapping) and value.get("columns") == "new"

    def insert(self, values: Values) -> None:
        """Insert one row: the key, every column of the flagged side (None for NULL) and any of
        ``columns``; the other side is computed from them in the same statement (so they must hold
        every column its expressions read: a column not passed is an error of the database, and the
        row is not written)."""
        new = self.writes_new()
        side = self.new_columns if new else self.old_columns
        self._check_shape(values, new, allowed=self.key + self.columns + side)
        missing = [c for c in self.key + side if c not in values]
        if missing:
            raise WriteShapeError(self._target.qualified, new, [], missing)
        names = list(values)
        computed = self._computed(names, new)
        types = self._types_of(names + [c for c, _ in computed])
        params = _params(names, values, row=bool(computed))
        row = self._row(names, types)
        exprs = [f":v{i}" for i in range(len(names))] + [over_values(e, row) for _, e in computed]
        quoted = [self._target.quote(c) for c in names + [c for c, _ in computed]]
        sql = f"INSERT INTO {self._target.qualified} ({', '.join(quoted)}) VALUES ({', '.join(exprs)})"
        self._run(sql, params, names, types, names + [c for c, _ in computed])

    def update(self, key: Any, values: Values) -> int:
        """Update the row of ``key`` (a value, or a tuple for a composite key) with ``values``
        (columns of the flagged side and of ``columns``; the key stays); the other side of each move
        they touch is computed in the same statement, over the passed values and the stored row.
        Returns the number of rows matched (0: no such key)."""
        new = self.writes_new()
        side = self.new_columns if new else self.old_columns
        self._check_shape(values, new, allowed=self.columns + side)
        if not values:
            raise WriteShapeError(self._target.qualified, new, [], ["(any column: no values given)"])
        names = list(values)
        computed = self._computed(names, new)
        types = self._types_of(names + [c for c, _ in computed])
        params = _params(names, values, row=bool(computed))
        params |= {f"k{i}": v for i, v in enumerate(_as_key(key))}
        row = self._row(names, types)
        sets = [f"{self._target.quote(c)} = :v{i}" for i, c in enumerate(names)]
        sets += [f"{self._target.quote(c)} = {over_values(e, row)}" for c, e in computed]
        sql = f"UPDATE {self._target.qualified} SET {', '.join(sets)} WHERE {self._where}"
        return self._run(sql, params, names, types, names + [c for c, _ in computed])

    def delete(self, key: Any) -> int:
        """Delete the row of ``key``; returns the number of rows deleted (0: no such key)."""
        params = {f"k{i}": v for i, v in enumerate(_as_key(key))}
        with self.engine.begin() as conn:
            return int(
                conn.execute(sa.text(f"DELETE FROM {self._target.qualified} WHERE {self._where}"), params).rowcount
            )

    # -- internals ------------------------------------------------------------------------------
    def _check_shape(self, values: Values, new: bool, allowed: Sequence[str]) -> None:
        unexpected = [c for c in values if c not in allowed]
        if unexpected:
            raise WriteShapeError(self._target.qualified, new, unexpected, [])

    def _computed(self, names: Sequence[str], new: bool) -> list[tuple[str, str]]:
        """(column, expression) of the other side of every move ``names`` touch: ``down`` of each
        old column from new-shape values, ``up`` of each new column from old-shape ones."""
        passed = set(names)
        if new:
            return [(o.name, o.down) for m in self.moves if passed & set(m.new_names) for o in m.olds]
        return [(n.name, n.up) for m in self.moves if passed & set(m.old_names) for n in m.news]

    def _row(self, names: Sequence[str], types: Mapping[str, sa.types.TypeEngine[Any]]) -> list[tuple[str, str]]:
        """Each passed column (quoted) and its bound parameter typed as its column, for the derived
        row the expressions read. The columns themselves take the bare parameter (a cast there
        would, say, cut a string too long for its column where the column refuses it), another
        parameter of the same value (PostgreSQL deduces one type per parameter, from every use)."""
        row = []
        for i, c in enumerate(names):
            try:
                sql_type = self.engine.dialect.type_compiler_instance.process(types[c])
            except sa.exc.CompileError:  # a type SQLAlchemy does not know (reflected as NullType): left bare
                row.append((self._target.quote(c), f":r{i}"))
            else:
                row.append((self._target.quote(c), self._dialect.bound(f":r{i}", sql_type)))
        return row

    def _types_of(self, names: Sequence[str]) -> dict[str, sa.types.TypeEngine[Any]]:
        """The types of ``names`` as the table has them; read again when one is not known, and
        ``MissingSideError`` when the table lacks it still."""
        with self._lock:
            if any(c not in self._types for c in names):
                self._types = self._reflect()
            types = dict(self._types)
        missing = [c for c in names if c not in types]
        if missing:
            raise MissingSideError(self._target.qualified, missing)
        return types

    def _reflect(self) -> dict[str, sa.types.TypeEngine[Any]]:
        columns = sa.inspect(self.engine).get_columns(self._target.table, schema=self._target.schema)
        return {c["name"]: c["type"] for c in columns}

    def _run(
        self,
        sql: str,
        params: dict[str, Any],
        names: Sequence[str],
        types: Mapping[str, sa.types.TypeEngine[Any]],
        written: Sequence[str],
    ) -> int:
        """Run the one statement, its parameters bound as their columns' types; a failure because
        a written column went (contract ran since the types were read) is ``MissingSideError``."""
        binds = [sa.bindparam(p, type_=types[names[int(p[1:])]]) for p in params if p[0] in "vr"]
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(sa.text(sql).bindparams(*binds), params).rowcount)
        except sa.exc.DBAPIError as exc:
            try:
                with self._lock:
                    self._types = self._reflect()
                    present = set(self._types)
            except Exception:  # the table cannot be read either (a lost server, say): the write's own error
                raise exc from None
            missing = [c for c in written if c not in present]
            if missing:
                raise MissingSideError(self._target.qualified, missing) from exc
            raise


def _params(names: Sequence[str], values: Values, *, row: bool) -> dict[str, Any]:
    """Each value as ``v<i>`` for its column and, when expressions read a derived row, again as
    ``r<i>`` there (``_row``)."""
    return {f"{p}{i}": values[c] for i, c in enumerate(names) for p in ("vr" if row else "v")}


def _as_key(key: Any) -> tuple[Any, ...]:
    return tuple(key) if isinstance(key, tuple | list) else (key,)
