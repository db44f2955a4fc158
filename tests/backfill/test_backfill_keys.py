"""Every key shape, on every engine: keyset chunks and segments copy each row exactly once."""

from __future__ import annotations

import pytest

from shiftover.backfill import backfill_status, run_backfill
from shiftover.backfill.keyset import plan_segments

from .conftest import dialect, rows_of, run_sql

N = 1500

# One table definition per key shape and engine, and an INSERT ... SELECT that fills it in the database.
FILL = {
    "postgresql": "INSERT INTO items SELECT {key_expr}, g, 'v' || g FROM generate_series(1, {n}) AS s(g)",
    "mysql": "INSERT INTO items SELECT {key_expr}, seq, CONCAT('v', seq) FROM seq_1_to_{n} AS s",
    "sqlite": (
        "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) "
        "INSERT INTO items SELECT {key_expr}, g, 'v' || g FROM s"
    ),
}

KEYS = {
    "int": (
        {"postgresql": "id integer", "mysql": "id int", "sqlite": "id integer"},
        {"postgresql": "g", "mysql": "seq", "sqlite": "g"},
        "id",
    ),
    "bigint_gaps": (
        {"postgresql": "id bigint", "mysql": "id bigint", "sqlite": "id integer"},
        {"postgresql": "g::bigint * g * 1000003", "mysql": "seq * seq * 1000003", "sqlite": "g * g * 1000003"},
        "id",
    ),
    "uuid": (
        {"postgresql": "id uuid", "mysql": "id uuid", "sqlite": "id char(36)"},
        {"postgresql": "md5(g::text)::uuid", "mysql": "UUID()", "sqlite": "lower(hex(randomblob(16)))"},
        "id",
    ),
    "text_collated": (
        {
            "postgresql": 'id text COLLATE "en-US-x-icu"',
            "mysql": "id varchar(40) COLLATE utf8mb4_unicode_ci",
            "sqlite": "id text COLLATE NOCASE",
        },
        {
            "postgresql": "(CASE WHEN g % 2 = 0 THEN 'K' ELSE 'k' END) || 'é' || g",
            "mysql": "CONCAT(IF(seq % 2 = 0, 'K', 'j'), 'é', seq)",
            "sqlite": "(CASE WHEN g % 2 = 0 THEN 'K' ELSE 'j' END) || 'é' || g",
        },
        "id",
    ),
}


def _tables(url: str, key_decl: str, pk: str, *, composite: bool = False) -> None:
    cols = f"{key_decl}, n integer NOT NULL, v varchar(40)" if not composite else key_decl
    run_sql(url, "DROP TABLE IF EXISTS items", f"CREATE TABLE items ({cols}, PRIMARY KEY ({pk}))")


def _fill(url: str, key_expr: str, n: int = N) -> None:
    run_sql(url, FILL[dialect(url)].format(key_expr=key_expr, n=n))


def _databases(engine_name, pg_database, mariadb_database, sqlite_database):  # type: ignore[no-untyped-def]
    make = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}[engine_name]
    return make(), make()


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql", "sqlite"])
@pytest.mark.parametrize("key_kind", list(KEYS))
def test_every_key_copies_every_row_once(
    engine_name, key_kind, pg_database, mariadb_database, sqlite_database, make_migration
):  # type: ignore[no-untyped-def]
    decls, exprs, pk = KEYS[key_kind]
    source, target = _databases(engine_name, pg_database, mariadb_database, sqlite_database)
    for url in (source, target):
        _tables(url, decls[engine_name], pk)
    _fill(source, exprs[engine_name])
    migration = make_migration(source, target, chunk_rows=100, concurrency=3)

    summary = run_backfill(migration)

    query = "SELECT id, n, v FROM items ORDER BY n"
    assert rows_of(target, query) == rows_of(source, query)
    assert summary.complete and summary.rows_copied == N
    status = backfill_status(migration.store.engine, migration.name)
    assert status.segments > 1 and status.complete and status.rows_copied == N
    # each finished segment's checkpoint is its range's end (the last one's is open: "end")
    ends = [seg["range"].removesuffix("]").split(", ")[-1] for seg in status.per_segment]
    assert [seg["last_key"] for seg in status.per_segment] == ends and ends[-1] == "end"


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql", "sqlite"])
def test_composite_key(engine_name, pg_database, mariadb_database, sqlite_database, make_migration):  # type: ignore[no-untyped-def]
    source, target = _databases(engine_name, pg_database, mariadb_database, sqlite_database)
    decl = "a integer NOT NULL, b varchar(20) NOT NULL, n integer NOT NULL"
    for url in (source, target):
        _tables(url, decl, "a, b", composite=True)
    exprs = {
        "postgresql": "g % 7, 'b' || (g / 7)",
        "mysql": "seq % 7, CONCAT('b', seq DIV 7)",
        "sqlite": "g % 7, 'b' || (g / 7)",
    }
    fill = FILL[engine_name].replace(", 'v' || g", "").replace(", CONCAT('v', seq)", "")
    run_sql(source, fill.format(key_expr=exprs[engine_name], n=N))
    migration = make_migration(source, target, key=["a", "b"], chunk_rows=97, concurrency=2)

    summary = run_backfill(migration)

    query = "SELECT a, b, n FROM items ORDER BY n"
    assert rows_of(target, query) == rows_of(source, query)
    assert summary.rows_copied == N


def test_segments_follow_the_data_not_min_max(pg_database, make_migration):  # type: ignore[no-untyped-def]
    """Keys 1..1000 plus a few huge outliers: min/max arithmetic would put every row in one segment."""
    source, target = pg_database(), pg_database()
    for url in (source, target):
        _tables(url, "id bigint", "id")
    run_sql(
        source,
        "INSERT INTO items SELECT g, g, 'v' FROM generate_series(1, 4000) g",
        "INSERT INTO items VALUES (10000000000, 0, 'far'), (20000000000, 0, 'farther')",
    )
    migration = make_migration(source, target)
    segments, total = plan_segments(migration.source, migration.mapping, 4)
    assert total == 4002 and len(segments) == 4
    uppers = [s.range.hi[0] for s in segments[:-1]]
    assert all(u < 4000 for u in uppers), uppers
    assert segments[0].range.lo is None and segments[-1].range.hi is None


@pytest.mark.parametrize("page_sample", [False, True])
def test_segments_are_balanced(page_sample, pg_database, make_migration, monkeypatch):  # type: ignore[no-untyped-def]
    """Row sample or (for very big tables) page sample: segments get similar row counts."""
    from shiftover.engines import postgresql

    if page_sample:
        monkeypatch.setattr(postgresql, "PAGE_SAMPLE_ROWS", 100_000)
    source, target = pg_database(), pg_database()
    for url in (source, target):
        _tables(url, "id bigint", "id")
    run_sql(source, "INSERT INTO items SELECT g * 3, g, 'v' FROM generate_series(1, 300000) g", "ANALYZE items")
    migration = make_migration(source, target)
    segments, total = plan_segments(migration.source, migration.mapping, 4)
    assert len(segments) == 4 and 250_000 < total < 350_000
    for segment in segments:
        lo = segment.range.lo[0] if segment.range.lo else 0
        hi = segment.range.hi[0] if segment.range.hi else 10**12
        share = rows_of(source, f"SELECT count(*) FROM items WHERE id > {lo} AND id <= {hi}")[0][0] / 300_000
        assert 0.1 < share < 0.45, (segment, share)
