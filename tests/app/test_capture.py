"""Trigger capture on PostgreSQL, MariaDB and SQLite: changes made while a copy runs are
replayed in order, and the tables end equal."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.capture import (
    capture_ddl,
    capture_installed,
    changelog_depth,
    install_capture,
    remove_capture,
    replay_changelog,
)
from shiftover.connect import get_engine
from shiftover.demo import create_orders, order_row, orders_table
from shiftover.mapping import TableMapping
from shiftover.preflight import resolve_mapping
from shiftover.spec import parse_spec

from .conftest import orders_spec

ROWS = 2_000


def copy_if_absent(old: sa.Engine, new: sa.Engine, mapping: TableMapping, chunk: int = 200) -> None:
    """A keyset copy of the rows present at its start, inserting only absent keys (as a backfill does)."""
    src, dst = mapping.source_table_obj(old), mapping.target_table_obj(new)
    insert = {
        "postgresql": lambda: sa.dialects.postgresql.insert(dst).on_conflict_do_nothing(),
        "mysql": lambda: dst.insert().prefix_with("IGNORE"),
        "sqlite": lambda: dst.insert().prefix_with("OR IGNORE"),
    }[new.dialect.name]()
    last = 0
    while last < ROWS:
        with old.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(mapping.select_source(src).where(src.c.id > last, src.c.id <= ROWS).limit(chunk))
            ]
        if not rows:
            break
        with new.begin() as conn:
            conn.execute(insert, rows)
        last = rows[-1]["id"]


def write_while(old: sa.Engine, stop: threading.Event) -> None:
    """Updates of existing rows; inserts, updates and deletes of new ones (keys above the copy's range)."""
    rng, table, mine = random.Random(3), orders_table(), list[int]()
    next_id = ROWS + 1
    while not stop.is_set():
        with old.begin() as conn:
            roll = rng.random()
            if roll < 0.4:
                conn.execute(
                    table.update()
                    .where(table.c.id == rng.randrange(1, ROWS + 1))
                    .values(status="paid", note=f"n{rng.random():.5f}")
                )
            elif roll < 0.7:
                conn.execute(table.insert().values(order_row(next_id, rng)))
                mine.append(next_id)
                next_id += 1
            elif mine and roll < 0.85:
                conn.execute(table.update().where(table.c.id == rng.choice(mine)).values(status="shipped"))
            elif mine:
                victim = mine.pop(rng.randrange(len(mine)))
                conn.execute(table.delete().where(table.c.id == victim))


def all_rows(engine: sa.Engine) -> list[tuple[str, ...]]:
    with engine.connect() as conn:
        return [tuple(map(str, r)) for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id"))]


@pytest.mark.parametrize("server", ["pg", "maria", "sqlite"])
def test_capture_during_concurrent_copy_ends_equal(server: str, request: pytest.FixtureRequest) -> None:
    make: Callable[[], str] = request.getfixturevalue(
        {"pg": "pg_database", "maria": "mariadb_database", "sqlite": "sqlite_database"}[server]
    )
    old_url, new_url = make(), make()
    old, new = get_engine(old_url), get_engine(new_url)
    create_orders(old, rows=ROWS)
    orders_table().create(new)
    spec = parse_spec(orders_spec("cap", old_url, new_url))
    mapping = resolve_mapping(spec)
    assert "so_changelog_orders" in capture_ddl(spec)
    install_capture(old, mapping)
    install_capture(old, mapping)  # idempotent
    assert capture_installed(old, mapping)

    stop_writes, copying = threading.Event(), threading.Event()
    copying.set()
    writer = threading.Thread(target=write_while, args=(old, stop_writes))
    writer.start()

    replayed: list[int] = []

    def keep_up() -> None:  # the replay flow's loop, following the changelog while the copy runs
        while copying.is_set():
            replayed.append(replay_changelog(old, new, mapping, batch=200).changes)
            stop_writes.wait(0.02)

    follower = threading.Thread(target=keep_up)
    follower.start()
    copy_if_absent(old, new, mapping)
    stop_writes.set()
    writer.join()
    copying.clear()
    follower.join()
    assert sum(replayed) > 0  # changes were applied while the copy was still running
    result = replay_changelog(old, new, mapping)
    assert changelog_depth(old, mapping) == 0 and result.remaining == 0
    rows = all_rows(old)
    assert len(rows) > ROWS  # the writer inserted rows during the copy
    assert rows == all_rows(new)

    remove_capture(old, mapping, keep_changelog=True)  # triggers off, changelog kept to watch
    with old.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET note = 'after removal' WHERE id = 1"))  # no trigger left to fire
    assert changelog_depth(old, mapping) == 0
    remove_capture(old, mapping)
    assert not capture_installed(old, mapping)
