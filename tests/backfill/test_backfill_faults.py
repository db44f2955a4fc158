"""Bad input and faults: each stops with a CopyError naming the table, the key range and the
cause; committed chunks stay; transient connection losses are retried; the next run resumes."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

from shiftover.backfill import backfill_status, make_throttle, run_backfill
from shiftover.backfill.errors import copy_error
from shiftover.errors import CopyError, SpecError, TransientCopyError

from .conftest import rows_of, run_sql

DDL = "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))"


def _items(source: str, n: int) -> None:
    run_sql(source, DDL, f"INSERT INTO items SELECT g, g, 'v' || g FROM generate_series(1, {n}) g")


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
    _items(source, 1000)
    run_sql(source, "UPDATE items SET v = repeat('x', 30) WHERE id = 650")
    run_sql(target, DDL.replace("varchar(40)", "varchar(20)"))
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
    _items(source, 300)
    run_sql(source, "UPDATE items SET n = 100000 WHERE id = 200")
    run_sql(target, DDL.replace("n integer", "n smallint"))
    with pytest.raises(CopyError, match="out of range"):
        run_backfill(make_migration(source, target, chunk_rows=50))


def test_null_key_refused_before_copying(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    run_sql(
        source,
        "CREATE TABLE items (id bigint UNIQUE, n integer NOT NULL, v varchar(40))",
        "INSERT INTO items VALUES (1, 1, 'a'), (NULL, 2, 'b'), (3, 3, 'c')",
    )
    run_sql(target, DDL)
    with pytest.raises(CopyError, match="NULL in key"):
        run_backfill(make_migration(source, target))
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def test_key_that_is_not_unique_is_refused(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    run_sql(source, "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))")
    run_sql(target, DDL)
    with pytest.raises(SpecError, match="no primary or unique key"):
        make_migration(source, target, key="n")


def test_different_column_set(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    _items(source, 100)
    run_sql(target, DDL)
    migration = make_migration(source, target)
    run_sql(target, "ALTER TABLE items DROP COLUMN v")  # changed after the spec was checked
    with pytest.raises(CopyError, match=r"lacks column\(s\) \['v'\]"):
        run_backfill(migration)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0


def _run_in_thread(migration):  # type: ignore[no-untyped-def]
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["summary"] = run_backfill(migration, throttle=make_throttle(migration, refresh_seconds=0.1))
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def _wait_rows(url: str, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while rows_of(url, "SELECT count(*) FROM items")[0][0] < at_least:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_source_dropped_mid_run(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    _items(source, 4000)
    run_sql(target, DDL)
    thread, outcome = _run_in_thread(make_migration(source, target, chunk_rows=100, max_rows_per_second=2000))
    _wait_rows(target, 300)
    run_sql(source, "DROP TABLE items")
    thread.join(timeout=30)
    error = outcome.get("error")
    assert isinstance(error, CopyError) and not isinstance(error, TransientCopyError)
    assert "items" in str(error) and "does not exist" in error.cause
    assert 0 < rows_of(target, "SELECT count(*) FROM items")[0][0] < 4000


def test_lost_connection_is_retried(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    _items(source, 4000)
    run_sql(target, DDL)
    thread, outcome = _run_in_thread(make_migration(source, target, chunk_rows=100, max_rows_per_second=4000))
    _wait_rows(target, 300)
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
