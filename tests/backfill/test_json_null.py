"""Issue 11: JSON null and SQL NULL are different values. PostgreSQL → MariaDB, PostgreSQL → SQLite
and SQLite → PostgreSQL copies still read a JSON null through the driver's JSON loader as None and
write SQL NULL (the copy path's own fix is open). Until then it must never pass unseen: the
rehearsal refuses it before anything is written, and the diff finds the row after a copy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shiftover.backfill import run_backfill
from shiftover.diff import diff_tables
from shiftover.rehearsal import rehearse

from .conftest import rows_of, run_sql

DDL = {
    "postgresql": "CREATE TABLE items (id bigint PRIMARY KEY, doc jsonb)",
    "mysql": "CREATE TABLE items (id bigint PRIMARY KEY, doc json)",
    "sqlite": "CREATE TABLE items (id integer PRIMARY KEY, doc json)",
}
KEEP_JSON_NULL = {("postgresql", "postgresql"), ("mysql", "postgresql")}  # the pairs whose copy keeps it today
ROWS = "INSERT INTO items VALUES (1, 'null'), (2, NULL), (3, '{\"a\": null}')"


@pytest.mark.parametrize(
    ("source_engine", "target_engine"),
    [
        ("postgresql", "mysql"),
        ("postgresql", "postgresql"),
        ("mysql", "postgresql"),
        ("postgresql", "sqlite"),
        ("sqlite", "postgresql"),
    ],
)
def test_a_json_null_turned_into_sql_null_is_refused_or_found(  # type: ignore[no-untyped-def]
    source_engine, target_engine, pg_database, mariadb_database, sqlite_database, make_migration
) -> None:
    make: dict[str, Callable[[], str]] = {
        "postgresql": pg_database,
        "mysql": mariadb_database,
        "sqlite": sqlite_database,
    }
    source, target = make[source_engine](), make[target_engine]()
    run_sql(source, DDL[source_engine])
    run_sql(target, DDL[target_engine])
    run_sql(source, ROWS)
    m = make_migration(source, target, chunk_rows=2)

    findings = [str(f) for f in rehearse(m.spec, m.mapping, m.source, m.target).findings]
    run_backfill(m)
    differing = [(d.key, d.kind) for d in diff_tables(m.source, m.target, m.mapping, m.spec.validation).differences]
    sql_null = "doc IS NULL"
    stored: list[Any] = [r[0] for r in rows_of(target, f"SELECT id FROM items WHERE {sql_null} ORDER BY id")]
    if (source_engine, target_engine) in KEEP_JSON_NULL:  # nothing to refuse, nothing differs
        assert stored == [2] and findings == [] and differing == []
    else:  # the copy wrote SQL NULL for row 1: told before, and found after
        assert stored == [1, 2]
        assert len(findings) == 1 and "column 'doc' changes on the way in" in findings[0] and "(1,)" in findings[0]
        assert "a JSON null written as SQL NULL" in findings[0]
        assert differing == [((1,), "changed")]
    # and whatever the copy did, the diff tells a JSON null from SQL NULL in the target
    run_sql(target, "UPDATE items SET doc = NULL WHERE id = 1")
    assert [(d.key, d.kind) for d in diff_tables(m.source, m.target, m.mapping, m.spec.validation).differences] == [
        ((1,), "changed")
    ]
