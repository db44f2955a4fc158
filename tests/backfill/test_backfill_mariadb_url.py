"""A MariaDB URL spelt ``mariadb+pymysql://`` (SQLAlchemy's dialect name "mariadb") backfills
exactly as ``mysql+pymysql://`` does, as source (COPY stream, rows loop, sampled segments) and as
target (its writer, the created table)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shiftover.backfill import run_backfill
from shiftover.connect import get_engine
from shiftover.migration import Migration

from .conftest import rows_of, run_sql
from .test_backfill_types import DDL, _expected, _insert, normalise

QUERY = "SELECT id, amount, plain_ts, zoned_ts, flag, doc, ref, bin, note FROM items ORDER BY id"
SPELLINGS = ["mysql+pymysql", "mariadb+pymysql"]


def spelt(url: str, driver: str) -> str:
    return sa.make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.mark.parametrize("driver", SPELLINGS)
@pytest.mark.parametrize(("source_engine", "target_engine"), [("mysql", "postgresql"), ("postgresql", "mysql")])
def test_type_matrix_with_either_spelling(  # type: ignore[no-untyped-def]
    driver, source_engine, target_engine, pg_database, mariadb_database, make_migration
) -> None:
    make = {"postgresql": pg_database, "mysql": lambda: spelt(mariadb_database(), driver)}
    source, target = make[source_engine](), make[target_engine]()
    run_sql(source, DDL[source_engine])
    run_sql(target, DDL[target_engine])
    _insert(source, source_engine)

    run_backfill(make_migration(source, target, chunk_rows=2))

    assert [normalise(r) for r in rows_of(target, QUERY)] == _expected()


@pytest.mark.parametrize("driver", SPELLINGS)
def test_mariadb_to_mariadb_in_sampled_segments(driver, mariadb_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """Rows through Python between two MariaDB databases, the source split by sampled keys."""
    source, target = spelt(mariadb_database(), driver), spelt(mariadb_database(), driver)
    assert get_engine(source).dialect.name == driver.partition("+")[0]
    ddl = "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))"
    run_sql(source, ddl, "INSERT INTO items SELECT seq, seq * 2, CONCAT('v', seq) FROM seq_1_to_3000")
    run_sql(target, ddl)

    migration: Migration = make_migration(source, target, chunk_rows=500, concurrency=3)
    run_backfill(migration)

    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)


@pytest.mark.parametrize("driver", SPELLINGS)
def test_create_target_on_mariadb(driver, pg_database, mariadb_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """The target table derived from a PostgreSQL source gets MariaDB's portable types either way."""
    source, target = pg_database(), spelt(mariadb_database(), driver)
    run_sql(source, "CREATE TABLE items (id text PRIMARY KEY, at timestamp, body text)")
    run_sql(source, "INSERT INTO items VALUES ('a', '2024-01-02 03:04:05.678901', 'x'), ('b', NULL, NULL)")

    run_backfill(make_migration(source, target, create_target=True))

    columns = {c["name"]: c["type"] for c in sa.inspect(get_engine(target)).get_columns("items")}
    # a text key is binary: the server's default collation would fold 'abc' and 'Abc' into one key
    assert str(columns["id"]) == "VARCHAR(255) COLLATE utf8mb4_bin" and "DATETIME" in str(columns["at"])
    assert rows_of(target, "SELECT id, body FROM items ORDER BY id") == [("a", "x"), ("b", None)]
