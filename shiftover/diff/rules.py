"""The comparison plan for one table pair: a ``ColumnRule`` per compared column, checked
before any work (unknown types, column sets that differ, keys that can hold NULLs)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.diff.equality import column_rule
from shiftover.diff.normalize import NATIVE, ColumnRule, classify, native_refused
from shiftover.engines import dialect_for, same_dialect
from shiftover.errors import DiffError
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.spec import ValidationSpec


def build_rules(source: Engine, target: Engine, mapping: TableMapping, options: ValidationSpec) -> list[ColumnRule]:
    """One rule per compared target column (key columns first), or DiffError naming the column."""
    src = mapping.source_table_obj(source)
    tgt = mapping.target_table_obj(target)
    check_column_sets(mapping, src, tgt, options)
    if mapping.transform is not None and not options.exclude:
        raise DiffError(
            "the spec has a Python transform, which no database can replay; list the columns it "
            "writes in validation.exclude so the others are compared in the database"
        )
    same_engine = same_dialect(source, target)
    compared = [c for c in mapping.columns if c.target not in options.exclude and c.source not in options.exclude]
    key_first = sorted(
        compared,
        key=lambda c: (c.source not in mapping.key, mapping.key.index(c.source) if c.source in mapping.key else 0),
    )
    return [_rule(c, src, tgt, source, target, options, same_engine) for c in key_first]


def check_column_sets(mapping: TableMapping, src: sa.Table, tgt: sa.Table, options: ValidationSpec) -> None:
    """Every target column is mapped or excluded; every mapped column exists on its side."""
    mapped = set(mapping.target_columns)
    extra = [c.name for c in tgt.columns if c.name not in mapped and c.name not in options.exclude]
    if extra:
        raise DiffError(
            f"target table {tgt.name!r} has column(s) {extra} that no source column maps to; "
            "map them in the spec's columns (rename or sql) or list them in validation.exclude"
        )
    for col in mapping.columns:
        if col.sql is None and col.source not in src.c:
            raise DiffError(f"column {col.source!r} is not in source table {src.name!r}; fix the spec's columns")
        if col.target not in tgt.c:
            raise DiffError(f"column {col.target!r} is not in target table {tgt.name!r}; fix the spec's columns")
    known = mapped | {m.source for m in mapping.columns} | {c.name for c in tgt.columns}
    unknown = [c for c in options.exclude if c not in known]
    if unknown:
        raise DiffError(f"validation.exclude names unknown column(s) {unknown}")
    keys = set(mapping.key) | set(mapping.target_key)
    excluded_keys = keys & set(options.exclude)
    if excluded_keys:
        raise DiffError(f"key column(s) {sorted(excluded_keys)} cannot be excluded from validation")


def _rule(
    col: ColumnMap, src: sa.Table, tgt: sa.Table, source: Engine, target: Engine, o: ValidationSpec, same_engine: bool
) -> ColumnRule:
    rule = column_rule(col, src, tgt)
    if rule.kind == "json" and not same_engine:
        return replace(rule, in_sql=False)  # the engines' canonical JSON texts differ: compared in Python
    kind = rule.kind
    tgt_type = tgt.c[col.target].type
    tgt_kind = classify(col.target, tgt_type)
    src_type: Any = src.c[col.source].type if col.sql is None else tgt_type
    src_kind = classify(col.source, src_type) if col.sql is None else None
    src_expr = f"({col.sql})" if col.sql is not None else _quoted(source, col.source)
    same_type = same_engine and col.sql is None and _same_type(src_type, tgt_type, source)
    if kind == NATIVE and not same_type:
        raise native_refused(col.target, str(tgt_type))
    if same_type and (kind == NATIVE or _native_ok(rule, source, o)):
        cast = dialect_for(source).native_text
        return replace(rule, source_sql=cast.format(src_expr), target_sql=cast.format(_quoted(target, col.target)))
    # An expression's declared type is unknown; the target's stands in for it (a PostgreSQL time
    # zone, say), but not for what MariaDB renders from the type alone: DATETIME(0)'s lack of a
    # fraction, a DECIMAL's scale. There the expression is rendered in full (col_type None).
    src_dialect, tgt_dialect = dialect_for(source), dialect_for(target)
    expr_type = None if col.sql is not None and src_dialect.renders_by_declared_type else src_type
    return replace(
        rule,
        source_sql=src_dialect.canonical_sql(rule, src_kind or kind, src_expr, expr_type, o),
        target_sql=tgt_dialect.canonical_sql(rule, tgt_kind, _quoted(target, col.target), tgt_type, o),
    )


def _native_ok(rule: ColumnRule, engine: Engine, o: ValidationSpec) -> bool:
    """Same engine, same declared type (checked by the caller): the engine's own text of the value
    (``native_text``) is already canonical, and much cheaper than formatting."""
    if rule.kind not in dialect_for(engine).native_kinds:
        return False
    if rule.kind == "timestamp" and o.timestamp_precision != "us":
        return False
    return not (rule.kind == "float" and o.float_tolerance)


def same_declared_type(col: ColumnMap, src: sa.Table, tgt: sa.Table, source: Engine, target: Engine) -> bool:
    """A plain column of the same declared type on the same engine: what an array, interval or
    bit string needs to be compared at all (by the engine's own text)."""
    if col.sql is not None or not same_dialect(source, target):
        return False
    return _same_type(src.c[col.source].type, tgt.c[col.target].type, source)


def _same_type(src_type: Any, tgt_type: Any, engine: Engine) -> bool:
    try:
        return str(src_type.compile(engine.dialect)) == str(tgt_type.compile(engine.dialect))
    except Exception:
        return False


def _quoted(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


def check_keys(engine: Engine, table: sa.Table, key: tuple[str, ...], side: str) -> None:
    """A key that may hold NULLs or duplicates cannot address rows: refuse before any work."""
    cols = [table.c[k] for k in key]
    with engine.connect() as conn:
        if any(c.nullable for c in cols):
            nulls = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(sa.or_(*(c.is_(None) for c in cols)))
            ).scalar_one()
            if nulls:
                raise DiffError(
                    f"{side} table {table.name!r} has {nulls} row(s) with a NULL in key {list(key)}; "
                    "fill or delete them, or declare a key that is NOT NULL"
                )
        if not _has_unique(table, key):
            dup = conn.execute(sa.select(*cols).group_by(*cols).having(sa.func.count() > 1).limit(1)).first()
            if dup is not None:
                raise DiffError(
                    f"{side} table {table.name!r} has duplicate key {tuple(dup)} in {list(key)}; "
                    "declare a unique key or deduplicate the table"
                )


def _has_unique(table: sa.Table, key: tuple[str, ...]) -> bool:
    wanted = set(key)
    if {c.name for c in table.primary_key.columns} == wanted:
        return True
    for cons in table.constraints:
        if isinstance(cons, sa.UniqueConstraint) and {c.name for c in cons.columns} == wanted:
            return True
    return any(ix.unique and {c.name for c in ix.columns} == wanted for ix in table.indexes)
