"""Bad input and faults: each stops with a CopyError naming the table, the key range and the
cause; committed chunks stay; transient connection losses are retried; the next run resumes."""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa

from shiftover.backfill import backfill_status, run_backfill
from shiftover.backfill.errors import copy_error
from shiftover.errors import CopyError, SpecError, TransientCopyError

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql, start_backfill


def test_classification() -> None:
    lost = copy_error("items", "keys (1, 2]", psycopg.OperationalError("server closed the connection"))
    data = copy_error("items", "keys (1, 2]", psycopg.errors.StringDataRightTruncation("value too long"))
    assert isinstance(lost, TransientCopyError)
    assert type(data) is CopyError and "value too long" in str(data) and "keys (1, 2]" in str(data)
    assert copy_error("items", "x", ValueError("not a database error")) is None


@pytest.mark.parametrize("target_engine", ["postgresql", "mysql"])
def test_value_too_long_stops_with_range_and_resumes_after_fix(
    target_engine, pg_database, mariadb_database, make_migration
) -> None:  # type: ignore[no-untyped-def]
    source = pg_database()
    target = pg_database() if target_engine == "postgresql" else mariadb_database()
    fill_items(source, 1000)
    run_sql(source, "UPDATE items SET v = repeat('x', 30) WHERE id = 650")
    run_sql(target, ITEMS_DDL.replace("varchar(40)", "varchar(20)"))
    migration = make_migration(source, target, chunk_rows=100, concurrency=1)

    with pytest.raises(CopyError) as caught:
        run_backfill(migration)

    error = caught.value
    assert error.table == "items" and "[600]" in error.key_range and "too long" in error.cause.lower()
    assert not isinstance(error, TransientCopyError)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 600  # committed chunks stay
    assert backfill_status(migration.store.engine, migration.name).per_segment[0]["state"] == "failed"

    run_sql(
        target,
        "ALTER TABLE items MODIFY v varchar(40)"
        if target_engine == "mysql"
        else "ALTER TABLE items ALTER COLUMN v TYPE varchar(40)",
    )
    run_backfill(make_migration(source, target, chunk_rows=100, concurrency=1))
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 1000


def test_out_of_range(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 300)
    run_sql(source, "UPDATE items SET n = 100000 WHERE id = 200")
    run_sql(target, ITEMS_DDL.replace("n integer", "n smallint"))
    with pytest.raises(CopyError, match="out of range"):
        run_backfill(make_migration(source, target, chunk_rows=50))


def test_null_key_refused_before_copying(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    run_sql(
        source,
        "CREATE TABLE items (id bigint UNIQUE, n integer NOT NULL, v varchar(40))",
        "INSERT INTO items VALUES (1, 1, 'a'), (NULL, 2, 'b'), (3, 3, 'c')",
    )
    run_sql(target, ITEMS_DDL)
    with pytest.raises(CopyError, match="NULL in key"):
        run_backfill(make_migration(source, target))
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def test_key_that_is_not_unique_is_refused(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    run_sql(source, "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))")
    run_sql(target, ITEMS_DDL)
    with pytest.raises(SpecError, match="no primary or unique key"):
        make_migration(source, target, key="n")


def test_different_column_set(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 100)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target)
    run_sql(target, "ALTER TABLE items DROP COLUMN v")  # changed after the spec was checked
    with pytest.raises(CopyError, match=r"lacks column\(s\) \['v'\]"):
        run_backfill(migration)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def _start_midway(pg_database, make_migration, rows_per_second: int):  # type: ignore[no-untyped-def]
    """A PG → PG backfill of 4000 rows running in a thread, once 300 rows are in the target."""
    source, target = pg_database(), pg_database()
    fill_items(source, 4000)
    run_sql(target, ITEMS_DDL)
    thread, outcome = start_backfill(
        make_migration(source, target, chunk_rows=100, max_rows_per_second=rows_per_second)
    )
    deadline = time.monotonic() + 30
    while rows_of(target, "SELECT count(*) FROM items")[0][0] < 300:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return source, target, thread, outcome


def test_source_dropped_mid_run(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target, thread, outcome = _start_midway(pg_database, make_migration, 2000)
    run_sql(source, "DROP TABLE items")
    thread.join(timeout=30)
    error = outcome.get("error")
    assert isinstance(error, CopyError) and not isinstance(error, TransientCopyError)
    assert "items" in str(error) and "does not exist" in error.cause
    assert 0 < rows_of(target, "SELECT count(*) FROM items")[0][0] < 4000


def test_lost_connection_is_retried(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target, thread, outcome = _start_midway(pg_database, make_migration, 4000)
    database = sa.make_url(target).database
    killed = rows_of(
        source,
        f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND backend_type = 'client backend'",
    )[0][0]
    assert killed >= 1
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].complete
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
