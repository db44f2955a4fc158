"""A table's schema and rows, to prove a rollback left it exactly as it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class TableSnapshot:
    columns: tuple[tuple[str, str, bool, str | None], ...]  # name, type, nullable, default; in order
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, tuple[str, ...], bool], ...]
    triggers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # every row, in key order
    checks: tuple[tuple[str, str], ...] = ()  # CHECK constraints: name, SQL text
    foreign_keys: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = ()


def snapshot_table(engine: Engine, table: str, key: tuple[str, ...], schema: str | None = None) -> TableSnapshot:
    insp = sa.inspect(engine)
    cols = insp.get_columns(table, schema=schema)
    columns = tuple(
        (c["name"], str(c["type"]), bool(c["nullable"]), None if c.get("default") is None else str(c["default"]))
        for c in cols
    )
    pk = tuple(insp.get_pk_constraint(table, schema=schema)["constrained_columns"])
    indexes = tuple(
        sorted(
            (str(i["name"]), tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
            for i in insp.get_indexes(table, schema=schema)
        )
    )
    checks = tuple(
        sorted((str(c["name"]), str(c["sqltext"])) for c in insp.get_check_constraints(table, schema=schema))
    )
    foreign_keys = tuple(
        sorted(
            (str(f["name"]), tuple(f["constrained_columns"]), str(f["referred_table"]), tuple(f["referred_columns"]))
            for f in insp.get_foreign_keys(table, schema=schema)
        )
    )
    t = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=engine)
    with engine.connect() as conn:
        rows = tuple(tuple(r) for r in conn.execute(sa.select(t).order_by(*(t.c[k] for k in key))))
        triggers = tuple(_trigger_names(conn, table))
    return TableSnapshot(columns, pk, indexes, triggers, rows, checks, foreign_keys)


def _trigger_names(conn: sa.Connection, table: str) -> list[str]:
    from shiftover.schema.engines import schema_dialect

    return [str(r[0]) for r in conn.execute(sa.text(schema_dialect(conn).trigger_names_sql), {"t": table})]
