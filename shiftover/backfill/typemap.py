"""Values and tables across engines.

``row_converter`` turns rows read with one engine's driver into values the other engine's
writer accepts (JSON, UUID, booleans, time zones, binary), touching only the columns that
need it. ``target_table_for`` derives a target table from the source schema with a
cross-engine type mapping; ``target_ddl`` shows its CREATE TABLE (``shiftover plan``)
before ``create_target_table`` runs it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateTable

from shiftover.engines import EngineDialect, dialect_for
from shiftover.mapping import TableMapping, forget_reflections

Convert = Callable[[Any], Any]
Row = tuple[Any, ...]


# -- values ---------------------------------------------------------------------------
def _json_text(value: Any) -> Any:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else value


def _to_bool(value: Any) -> Any:
    return bool(value) if isinstance(value, int) else value


def _to_int(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _to_text(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _to_bytes(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _aware_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _timezone(type_: sa.types.TypeEngine[Any] | None) -> bool | None:
    return bool(type_.timezone) if isinstance(type_, sa.DateTime) else None


def _target_steps(
    source_type: sa.types.TypeEngine[Any] | None, target_type: sa.types.TypeEngine[Any], dialect: EngineDialect
) -> list[Convert]:
    """Conversions from canonical Python values to what the target's writer takes."""
    steps: list[Convert] = []
    if isinstance(target_type, sa.DateTime) and _timezone(source_type) != _timezone(target_type):
        steps.append(_aware_utc if target_type.timezone and dialect.timezone_aware else _naive_utc)
    json_in = isinstance(source_type, sa.JSON) or source_type is None
    if isinstance(target_type, sa.JSON) or (json_in and not isinstance(target_type, sa.Uuid)):
        steps.append(_json_text)  # text already is JSON (MySQL and SQLite hand JSON over as text)
    if isinstance(target_type, sa.Boolean) and dialect.strict_booleans:
        steps.append(_to_bool)
    elif isinstance(target_type, sa.Integer) and dialect.strict_booleans and isinstance(source_type, sa.Boolean):
        steps.append(_to_int)
    if not dialect.adapts_uuid_and_buffers and not isinstance(target_type, sa.Uuid):
        if source_type is None or isinstance(source_type, sa.Uuid):
            steps.append(_to_text)
        if isinstance(source_type, sa.LargeBinary):
            steps.append(_to_bytes)
    return steps


def column_converter(
    source_type: sa.types.TypeEngine[Any] | None,
    target_type: sa.types.TypeEngine[Any],
    target_dialect: sa.Dialect,
) -> Convert | None:
    """One column's conversion, or None when values pass through unchanged."""
    # values arrive through SQLAlchemy (source result processing is done): only the target's side remains
    engine_dialect = dialect_for(target_dialect)
    steps = _target_steps(source_type, target_type, engine_dialect)
    write = engine_dialect.storage_step(target_type, target_dialect)  # SQLite's storage conventions
    if write is not None:
        steps.append(write)
    if not steps:
        return None

    def convert(value: Any) -> Any:
        if value is None:
            return None
        for step in steps:
            value = step(value)
            if value is None:
                return None
        return value

    return convert


def row_converter(
    mapping: TableMapping, source: sa.Table, target: sa.Table, target_dialect: sa.Dialect
) -> Callable[[Sequence[Row]], list[Row]] | None:
    """A converter for whole chunks (columns in ``mapping.columns`` order), or None if none is needed."""
    converters: list[tuple[int, Convert]] = []
    for i, col in enumerate(mapping.columns):
        source_type = source.c[col.source].type if col.sql is None and col.source in source.c else None
        convert = column_converter(source_type, target.c[col.target].type, target_dialect)
        if convert is not None:
            converters.append((i, convert))
    if not converters:
        return None

    def convert_rows(rows: Sequence[Row]) -> list[Row]:
        out = []
        for row in rows:
            values = list(row)
            for i, convert in converters:
                values[i] = convert(values[i])
            out.append(tuple(values))
        return out

    return convert_rows


# -- tables ---------------------------------------------------------------------------
def _portable_type(type_: sa.types.TypeEngine[Any], dialect: EngineDialect, is_key: bool) -> sa.types.TypeEngine[Any]:
    if isinstance(type_, mysql.TIMESTAMP):
        return dialect.portable_type(sa.DateTime(timezone=True), is_key)  # an instant, stored in UTC
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        generic = sa.Text() if not isinstance(type_, sa.LargeBinary) else sa.LargeBinary()
    if isinstance(generic, sa.String) and generic.collation:  # another engine's collation name
        generic = type(generic)(length=generic.length)
    return dialect.portable_type(generic, is_key)


def _column_type(
    source_engine: Engine, target_dialect: EngineDialect, src: sa.Column[Any], is_key: bool, json_columns: set[str]
) -> sa.types.TypeEngine[Any]:
    """The created column's type: the source's own on the same engine (arrays, intervals, bits, a named
    enum, a decimal's NaN and zero dates stay what they are), a portable one across engines."""
    if src.name in json_columns:  # MariaDB's JSON (LONGTEXT to SQLAlchemy): JSON again, with its CHECK
        return target_dialect.portable_type(sa.JSON(), is_key)
    if dialect_for(source_engine) is target_dialect and not isinstance(src.type, sa.types.NullType):
        return src.type.copy()
    return _portable_type(src.type, target_dialect, is_key)


def target_table_for(source_engine: Engine, target_dialect: EngineDialect, mapping: TableMapping) -> sa.Table:
    """The target table implied by the source schema: mapped columns, the source's types on the same engine
    and portable ones across engines, the key as primary key in the declared key order."""
    source = mapping.source_table_obj(source_engine)
    json_columns = dialect_for(source_engine).json_columns(source_engine, source)
    target_key = set(mapping.target_key)
    columns = []
    for col in mapping.columns:
        is_key = col.target in target_key
        if col.sql is None:
            src = source.c[col.source]
            type_ = _column_type(source_engine, target_dialect, src, is_key, json_columns)
            nullable = src.nullable and not is_key
        else:
            type_, nullable = target_dialect.expression_type(), True
        columns.append(sa.Column(col.target, type_, nullable=nullable, autoincrement=False))
    key = sa.PrimaryKeyConstraint(*mapping.target_key)
    return sa.Table(mapping.target_table, sa.MetaData(), *columns, key, schema=mapping.target_schema)


def uncreatable_columns(source_engine: Engine, target_engine: Engine, mapping: TableMapping) -> dict[str, str]:
    """Columns whose source type has no type the target engine can create (a PostgreSQL array on MariaDB):
    target column -> the source type."""
    source = mapping.source_table_obj(source_engine)
    table = target_table_for(source_engine, dialect_for(target_engine), mapping)
    out = {}
    for col in mapping.columns:
        try:
            table.c[col.target].type.compile(dialect=target_engine.dialect)
        except sa.exc.CompileError:
            src_type = source.c[col.source].type if col.sql is None else None
            out[col.target] = "?" if src_type is None else str(src_type.compile(dialect=source_engine.dialect))
    return out


def target_ddl(source_engine: Engine, target_engine: Engine, mapping: TableMapping) -> str:
    """The CREATE TABLE that ``create_target_table`` would run, for plans and dry runs (or, when a column's
    type has no counterpart on the target, which columns and why: the rehearsal refuses them)."""
    missing = uncreatable_columns(source_engine, target_engine, mapping)
    if missing:
        name = dialect_for(target_engine).name
        return "\n".join(
            f"-- column {c!r}: {t} has no {name} type; convert it in the mapping" for c, t in missing.items()
        )
    table = target_table_for(source_engine, dialect_for(target_engine), mapping)
    return str(CreateTable(table).compile(dialect=target_engine.dialect)).strip()


def create_target_table(source_engine: Engine, target_engine: Engine, mapping: TableMapping) -> bool:
    """Create the target table from the source schema unless it exists; True when created."""
    inspector = sa.inspect(target_engine)
    if inspector.has_table(mapping.target_table, schema=mapping.target_schema):
        return False
    target_table_for(source_engine, dialect_for(target_engine), mapping).create(target_engine)
    forget_reflections()
    return True
