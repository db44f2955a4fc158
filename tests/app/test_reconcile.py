"""Reconciliation: direction by write mode, retries, dead letters."""

from __future__ import annotations

import sqlalchemy as sa

from shiftover.flags.routing import WriteMode
from shiftover.reconcile import dead_entries, drain_queue, enqueue, queue_depth, retry_dead

from .conftest import Pair, unreachable


def test_drain_follows_the_write_mode(pg_pair: Pair) -> None:
    eng = pg_pair.store.engine
    with pg_pair.new.begin() as conn:  # new is the source of truth and leads old
        conn.execute(sa.text("UPDATE orders SET note = 'new leads' WHERE id IN (1, 2)"))
        conn.execute(sa.text("DELETE FROM orders WHERE id = 3"))
    enqueue(eng, pg_pair.name, [((1,), "upsert"), ((2,), "upsert"), ((3,), "delete")])
    pg_pair.set_mode(WriteMode.DUAL_NEW_PRIMARY)
    result = drain_queue(pg_pair.old, pg_pair.new, eng, pg_pair.mapping, pg_pair.name)
    assert (result.direction, result.synced) == ("new->old", 3)
    assert pg_pair.rows("old") == pg_pair.rows("new")
    enqueue(eng, pg_pair.name, [((5,), "upsert")])
    pg_pair.set_mode(WriteMode.NEW_ONLY)
    closed = drain_queue(pg_pair.old, pg_pair.new, eng, pg_pair.mapping, pg_pair.name)
    assert closed.direction == "none" and queue_depth(eng, pg_pair.name)["pending"] == 0


def test_failing_keys_retry_then_go_dead_and_can_be_retried(pg_pair: Pair) -> None:
    eng = pg_pair.store.engine
    pg_pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pg_pair.old.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'x' WHERE id = 1"))
        conn.execute(sa.text("UPDATE orders SET status = 'much too long' WHERE id = 2"))
    with pg_pair.new.begin() as conn:  # key 2's image no longer fits the new table: it fails every time
        conn.execute(sa.text("ALTER TABLE orders ADD CONSTRAINT short_status CHECK (length(status) <= 9) NOT VALID"))
    enqueue(eng, pg_pair.name, [((1,), "upsert"), ((2,), "upsert")])
    first = drain_queue(pg_pair.old, pg_pair.new, eng, pg_pair.mapping, pg_pair.name, max_attempts=2)
    assert (first.synced, first.failed, first.dead) == (1, 1, 0)  # the good key is not held back by the bad one
    second = drain_queue(pg_pair.old, pg_pair.new, eng, pg_pair.mapping, pg_pair.name, max_attempts=2)
    assert (second.synced, second.failed, second.dead) == (0, 0, 1)
    assert queue_depth(eng, pg_pair.name) == {"pending": 0, "dead": 1, "done": 1}
    dead = dead_entries(eng, pg_pair.name)
    assert dead[0]["key_json"] == "[2]" and dead[0]["attempts"] == 2 and "short_status" in dead[0]["last_error"]
    with pg_pair.new.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP CONSTRAINT short_status"))
    assert retry_dead(eng, pg_pair.name) == 1
    third = drain_queue(pg_pair.old, pg_pair.new, eng, pg_pair.mapping, pg_pair.name)
    assert third.synced == 1 and queue_depth(eng, pg_pair.name)["dead"] == 0
    assert pg_pair.rows("old") == pg_pair.rows("new")


def test_drain_against_a_dead_store_stops_knocking_and_keeps_keys_pending(pg_pair: Pair) -> None:
    eng = pg_pair.store.engine
    dead = unreachable(pg_pair.new)
    enqueue(eng, pg_pair.name, [((i,), "upsert") for i in range(1, 21)])
    result = drain_queue(pg_pair.old, dead, eng, pg_pair.mapping, pg_pair.name)
    assert (result.synced, result.failed, result.dead) == (0, 20, 0)
    assert sum("store unreachable" in e for e in result.errors) == 17  # three real tries, then skipped
    assert queue_depth(eng, pg_pair.name)["pending"] == 20
