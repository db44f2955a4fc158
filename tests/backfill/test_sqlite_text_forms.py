"""Issue 11: SQLite keeps timestamps as text, and ``WHERE at = '...'`` compares that text. Rows the
backfill writes must have the form applications (SQLAlchemy) and the dual-writer write, or the two
stores answer the same query differently while validation calls the instants equal."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa

from shiftover.backfill import run_backfill
from shiftover.connect import get_engine
from shiftover.rowsync import sync_keys

from .conftest import run_sql

DDL = "CREATE TABLE items (id integer PRIMARY KEY, at datetime, d date)"
VALUES = [datetime(2024, 1, 1, 9, 43, 24), datetime(2024, 1, 1, 9, 43, 24, 500000), datetime(1999, 12, 31, 23, 59, 59)]


def raw_texts(url: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(sa.make_url(url).database or "")
    try:
        return conn.execute("SELECT id, at, typeof(at), d FROM items ORDER BY id").fetchall()
    finally:
        conn.close()


def test_sqlite_timestamps_keep_the_applications_text_form(sqlite_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target, mirror = sqlite_database(), sqlite_database(), sqlite_database()
    for url in (source, target, mirror):
        run_sql(url, DDL)
    items = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime),
        sa.Column("d", sa.Date),
    )
    rows = [{"id": i, "at": at, "d": date(2024, 1, i)} for i, at in enumerate(VALUES, start=1)]
    for url in (source, mirror):  # written as an application writes them: through SQLAlchemy
        with get_engine(url).begin() as conn:
            conn.execute(items.insert(), rows)
    app_form = raw_texts(mirror)
    assert app_form[0][1:3] == ("2024-01-01 09:43:24.000000", "text")

    m = make_migration(source, target, chunk_rows=2)
    run_backfill(m)
    assert raw_texts(target) == app_form

    run_sql(target, "DELETE FROM items")  # repair and the drain write the same form
    sync_keys(m.source, m.target, m.mapping, [(1,), (2,), (3,)])
    assert raw_texts(target) == app_form
    with get_engine(target).connect() as conn:  # the query an application runs finds the row
        found = conn.execute(sa.text("SELECT id FROM items WHERE at = '2024-01-01 09:43:24.000000'")).all()
    assert [r[0] for r in found] == [1]


def test_a_copy_into_sqlite_from_postgres_writes_the_same_form(
    pg_database, sqlite_database, make_migration, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), sqlite_database()
    run_sql(source, "CREATE TABLE items (id bigint PRIMARY KEY, at timestamp, d date)")
    run_sql(
        source,
        "INSERT INTO items VALUES (1, '2024-01-01 09:43:24', '2024-01-01'), (2, '2024-01-01 09:43:24.5', '2024-01-02')",
    )
    run_sql(target, DDL)
    run_backfill(make_migration(source, target))
    assert [r[1] for r in raw_texts(target)] == ["2024-01-01 09:43:24.000000", "2024-01-01 09:43:24.500000"]
