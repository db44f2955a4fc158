"""How source rows become target rows: the resolved column mapping every engine works from.

The spec names columns loosely (all columns, renames, SQL expressions, a Python transform);
``preflight.resolve_mapping`` turns it, checked against the live tables, into a
``TableMapping`` that the copy, diff and dual-write engines share.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class ColumnMap:
    """One target column: read from ``source`` (or computed by ``sql``) and written as ``target``."""

    source: str
    target: str
    sql: str | None = None

    def select_expr(self, table: sa.Table, *, json_text: bool = True) -> sa.ColumnElement[Any]:
        """The expression that reads this column's value from the source table.

        A JSON column is read as its text (``json_text``): the drivers' JSON loaders hand a JSON
        null over as None, like SQL NULL, and a JSON string as a bare str; the text carries both
        exactly to any target. Only a Python transform gets parsed values (it was written for them).
        """
        if self.sql is not None:
            return sa.literal_column(f"({self.sql})").label(self.target)
        column = table.c[self.source]
        if json_text and isinstance(column.type, sa.JSON):
            return sa.cast(column, sa.Text).label(self.target)
        return column.label(self.target)


@dataclass(frozen=True)
class TableMapping:
    source_table: str
    target_table: str
    key: tuple[str, ...]  # source names of the key columns, in key order
    columns: tuple[ColumnMap, ...]
    source_schema: str | None = None
    target_schema: str | None = None
    transform: Callable[[Any], Any] | None = None  # pandas DataFrame -> DataFrame, target names

    @property
    def target_key(self) -> tuple[str, ...]:
        by_source = {c.source: c.target for c in self.columns}
        return tuple(by_source[k] for k in self.key)

    @property
    def target_columns(self) -> tuple[str, ...]:
        return tuple(c.target for c in self.columns)

    @property
    def fast_path(self) -> bool:
        """True when rows can stream database to database without passing through pandas."""
        return self.transform is None

    def source_table_obj(self, engine: sa.Engine) -> sa.Table:
        return reflect_table(engine, self.source_table, self.source_schema)

    def target_table_obj(self, engine: sa.Engine) -> sa.Table:
        return reflect_table(engine, self.target_table, self.target_schema)

    def transform_frame(self, frame: Any) -> Any:
        """The spec's pandas transform over a chunk, cut to the target columns in order, with plain
        Python values and NULL as ``None`` (pandas' NaN/NaT must never reach a database)."""
        assert self.transform is not None
        columns = list(self.target_columns)
        out = self.transform(frame)[columns].astype(object)
        return out.where(out.notna(), None)

    def transform_records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``transform_frame`` for row dicts (target names); rows pass through when there is no transform."""
        if self.transform is None or not rows:
            return rows
        import pandas as pd

        records: list[dict[str, Any]] = self.transform_frame(pd.DataFrame.from_records(rows)).to_dict("records")
        return records

    def select_source(self, table: sa.Table) -> sa.Select[Any]:
        """SELECT of every mapped column, labelled with target names, in key order."""
        json_text = self.transform is None
        return sa.select(*(c.select_expr(table, json_text=json_text) for c in self.columns)).order_by(
            *(table.c[k] for k in self.key)
        )


_reflected: dict[tuple[str, str | None, str], sa.Table] = {}


def reflect_table(engine: sa.Engine, name: str, schema: str | None = None) -> sa.Table:
    """Reflect a table once per engine (cached: reflection costs a round trip per column set)."""
    cache_key = (name, schema, engine.url.render_as_string(hide_password=False))
    table = _reflected.get(cache_key)
    if table is None:
        table = sa.Table(
            name, sa.MetaData(), schema=schema, autoload_with=engine, listeners=[("column_reflect", _engine_names)]
        )
        exact_floats(table)
        _reflected[cache_key] = table
    return table


def _engine_names(inspector: Any, table: sa.Table, column_info: dict[str, Any]) -> None:
    """Column names as the engine spells them (SQLAlchemy keeps a MariaDB name's backtick doubled)."""
    from shiftover.engines import dialect_for

    name = dialect_for(inspector.dialect).reflected_name(column_info["name"])
    column_info["name"] = column_info["key"] = name


def exact_floats(table: sa.Table) -> None:
    """Floats read as Python floats, never as decimals: SQLAlchemy reflects a MySQL/MariaDB DOUBLE
    with ``asdecimal=True`` and 10 decimal places, which rounded every value a repair or a drain
    copied (13.809359999999998 -> 13.80936, 5e-324 -> 0). A float is carried bit for bit."""
    for column in table.columns:
        if isinstance(column.type, sa.Float):
            column.type.asdecimal = False


class JsonText(sa.types.TypeDecorator[Any]):
    """A JSON column written from its text: the text is bound as it is (cast to the column's JSON
    type where the engine types binds), so JSON null stays JSON null, None stays SQL NULL and a
    JSON string is not encoded a second time. Parsed values (a transform's dicts) are encoded once."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, json_type: sa.types.TypeEngine[Any], cast: bool) -> None:
        super().__init__()
        self.json_type = json_type
        self.cast = cast  # SQLite has no JSON type to cast to (CAST(x AS JSON) is numeric affinity there)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, default=str)

    def bind_expression(self, bindvalue: Any) -> Any:
        return sa.cast(bindvalue, self.json_type) if self.cast else bindvalue


_json_views: weakref.WeakKeyDictionary[sa.Table, sa.Table] = weakref.WeakKeyDictionary()


def json_as_text(table: sa.Table, cast: bool) -> sa.Table:
    """``table`` with its JSON columns written from text (``JsonText``; ``cast``: the engine's binds
    are cast to the JSON type, ``EngineDialect.casts_json_binds``); itself when it has none. Made
    once per table: every repair and dual-written row goes through it, and a new Table object per
    call would also miss SQLAlchemy's compiled-statement cache."""
    if not any(isinstance(c.type, sa.JSON) for c in table.columns):
        return table
    view = _json_views.get(table)
    if view is None:
        columns = [
            sa.Column(
                c.name, JsonText(c.type, cast) if isinstance(c.type, sa.JSON) else c.type, primary_key=c.primary_key
            )
            for c in table.columns
        ]
        view = _json_views[table] = sa.Table(table.name, sa.MetaData(), *columns, schema=table.schema)
    return view


def forget_reflections() -> None:
    """Drop cached reflections (after DDL: a created, renamed or dropped table)."""
    _reflected.clear()
