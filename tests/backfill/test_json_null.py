"""Issue 11: JSON null and SQL NULL are different values, and a JSON string is not its bare text.
Every copy path (the backfill, and ``sync_keys``: repair, the reconciliation drain and the
dual-writer's row images) reads JSON as its text and writes that text, so each pair keeps them
apart. The stored values are read back with plain SQL and parsed here, outside Shiftover's code."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from shiftover.backfill import run_backfill
from shiftover.diff import diff_tables
from shiftover.rehearsal import rehearse
from shiftover.rowsync import sync_keys

from .conftest import rows_of, run_sql

DDL = {
    "postgresql": "CREATE TABLE items (id bigint PRIMARY KEY, doc jsonb)",
    "mysql": "CREATE TABLE items (id bigint PRIMARY KEY, doc json)",
    "sqlite": "CREATE TABLE items (id integer PRIMARY KEY, doc json)",
}
AS_TEXT = {"postgresql": "doc::text", "mysql": "doc", "sqlite": "CAST(doc AS TEXT)"}
# JSON null, SQL NULL, a nested null, a JSON string (also one spelling 'null'), a number, an array
ROWS = (
    "INSERT INTO items VALUES (1, 'null'), (2, NULL), (3, '{\"a\": null, \"b\": [1, 2.5]}'), (4, '\"text\"'),"
    " (5, '\"null\"'), (6, '-12.5e3'), (7, '[]')"
)
SQL_NULL = object()


def stored(url: str, engine: str) -> dict[int, Any]:
    """Each row's JSON value parsed from the text the database returns; SQL NULL as ``SQL_NULL``."""
    rows = rows_of(url, f"SELECT id, {AS_TEXT[engine]} FROM items ORDER BY id")
    return {int(i): SQL_NULL if t is None else json.loads(str(t)) for i, t in rows}


PAIRS = [
    ("postgresql", "mysql"),
    ("postgresql", "postgresql"),
    ("mysql", "postgresql"),
    ("postgresql", "sqlite"),
    ("sqlite", "postgresql"),
    ("mysql", "sqlite"),
    ("sqlite", "mysql"),
]


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
def test_json_values_survive_every_copy_path(  # type: ignore[no-untyped-def]
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
    expected = stored(source, source_engine)
    assert expected[1] is None and expected[2] is SQL_NULL and expected[5] == "null"
    m = make_migration(source, target, chunk_rows=2)

    assert [str(f) for f in rehearse(m.spec, m.mapping, m.source, m.target).findings] == []
    run_backfill(m)
    assert stored(target, target_engine) == expected
    assert diff_tables(m.source, m.target, m.mapping, m.spec.validation).differences == []

    # repair and the drain: every row rewritten from the source by sync_keys
    run_sql(target, "DELETE FROM items WHERE id IN (1, 3, 5)", "UPDATE items SET doc = NULL WHERE id IN (4, 6)")
    result = sync_keys(m.source, m.target, m.mapping, [(i,) for i in range(1, 9)])
    assert (result.upserted, result.deleted) == (7, 1)
    assert stored(target, target_engine) == expected

    # and the diff tells a JSON null from SQL NULL, and a JSON string from SQL NULL
    run_sql(target, "UPDATE items SET doc = NULL WHERE id IN (1, 5)")
    differing = [(d.key, d.kind) for d in diff_tables(m.source, m.target, m.mapping, m.spec.validation).differences]
    assert differing == [((1,), "changed"), ((5,), "changed")]


def test_a_json_number_sqlite_would_round_is_refused(pg_database, sqlite_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """A column declared ``json`` has NUMERIC affinity in SQLite: a bare JSON number past int64 is
    stored as a REAL and rounded. The rehearsal says so before anything is written."""
    source, target = pg_database(), sqlite_database()
    run_sql(source, DDL["postgresql"], "INSERT INTO items VALUES (1, '12345678901234567890'), (2, '{\"n\": 1}')")
    run_sql(target, DDL["sqlite"])
    m = make_migration(source, target)
    findings = [str(f) for f in rehearse(m.spec, m.mapping, m.source, m.target).findings]
    assert len(findings) == 1 and "column 'doc' changes on the way in" in findings[0] and "(1,)" in findings[0]
    assert rows_of(target, "SELECT count(*) FROM items") == [(0,)]
