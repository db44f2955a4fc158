"""Column mapping (renames, SQL expressions, a pandas transform), insert-if-absent against
dual-written rows, and creating the target table from the source schema."""

from __future__ import annotations

import dataclasses

import pytest

from shiftover.backfill import run_backfill, target_ddl
from shiftover.mapping import forget_reflections

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql


@pytest.mark.parametrize("target_engine", ["postgresql", "mysql", "sqlite"])
def test_never_overwrites_a_dual_written_row(
    target_engine, pg_database, mariadb_database, sqlite_database, make_migration
) -> None:  # type: ignore[no-untyped-def]
    source = pg_database()
    target = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}[target_engine]()
    fill_items(source, 500)
    run_sql(target, ITEMS_DDL, "INSERT INTO items VALUES (7, -7, 'newer'), (450, -450, 'newer')")
    run_backfill(make_migration(source, target, chunk_rows=60, concurrency=2))
    rows = {r[0]: r[1:] for r in rows_of(target, "SELECT id, n, v FROM items")}
    assert len(rows) == 500
    assert rows[7] == (-7, "newer") and rows[450] == (-450, "newer") and rows[8] == (8, "v8")


def shout(frame):  # type: ignore[no-untyped-def]
    frame["label"] = frame["label"].str.upper()
    return frame


@pytest.mark.parametrize("with_transform", [False, True])
def test_renames_sql_columns_and_transform(with_transform, pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 300)
    run_sql(
        target, "CREATE TABLE items_v2 (id bigint PRIMARY KEY, amount integer NOT NULL, label text, doubled bigint)"
    )
    migration = make_migration(
        source,
        target,
        target_table="items_v2",
        chunk_rows=70,
        columns=[
            {"name": "id"},
            {"name": "n", "target": "amount"},
            {"name": "v", "target": "label"},
            {"name": "doubled", "sql": "n * 2"},
        ],
    )
    if with_transform:  # the slow path: every chunk passes through pandas, then the same writer
        migration = dataclasses.replace(migration, mapping=dataclasses.replace(migration.mapping, transform=shout))
        assert not migration.mapping.fast_path
    run_backfill(migration)
    rows = rows_of(target, "SELECT id, amount, label, doubled FROM items_v2 ORDER BY id")
    label = "V1" if with_transform else "v1"
    assert len(rows) == 300 and rows[0] == (1, 1, label, 2)


@pytest.mark.parametrize(
    ("source_engine", "target_engine"), [("mysql", "postgresql"), ("postgresql", "mysql"), ("postgresql", "sqlite")]
)
def test_create_target_from_source_schema(
    source_engine, target_engine, pg_database, mariadb_database, sqlite_database, make_migration
) -> None:  # type: ignore[no-untyped-def]
    make = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}
    source, target = make[source_engine](), make[target_engine]()
    run_sql(
        source,
        "CREATE TABLE items (id bigint PRIMARY KEY, amount decimal(12,2) NOT NULL, "
        "status varchar(20) NOT NULL, note text, created_at timestamp(6) NULL, flag boolean)",
    )
    run_sql(
        source,
        "INSERT INTO items VALUES (1, 12.34, 'paid', NULL, '2024-01-02 03:04:05.678901', TRUE), "
        "(2, -1.00, 'new', 'x', NULL, FALSE)",
    )
    migration = make_migration(source, target, create_target=True)
    ddl = target_ddl(migration.source, migration.target, migration.mapping)
    assert ddl.startswith("CREATE TABLE items") and "PRIMARY KEY (id)" in ddl

    run_backfill(migration)
    forget_reflections()

    rows = rows_of(target, "SELECT id, amount, status, note, created_at, flag FROM items ORDER BY id")
    assert [(r[0], float(r[1]), r[2], r[3], str(r[4])[:26] if r[4] else None, bool(r[5])) for r in rows] == [
        (1, 12.34, "paid", None, "2024-01-02 03:04:05.678901", True),
        (2, -1.0, "new", "x", None, False),
    ]
