"""The application's write never fails because of the secondary: a transform or ``sql:`` column that
raises while computing the new row leaves the old store written and the keys in the reconciliation
queue, on PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.flags.routing import WriteMode
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.reconcile import drain_queue, pending_entries

from .conftest import Pair, order


@pytest.fixture(params=["pg", "maria", "sqlite"])
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.getfixturevalue(f"{request.param}_pair")


def refuse_boom(frame: Any) -> Any:
    """A transform that raises for some rows (status 'boom')."""
    if (frame["status"] == "boom").any():
        raise ValueError("cannot transform a 'boom' order")
    return frame


def queued(pair: Pair) -> dict[tuple[Any, ...], str]:
    return {e.key: e.op for e in pending_entries(pair.store.engine, pair.name, limit=100)}


def old_row(pair: Pair, order_id: int) -> Any:
    with pair.old.connect() as conn:
        return conn.execute(sa.text("SELECT status, note FROM orders WHERE id = :id"), {"id": order_id}).first()


def test_a_raising_transform_queues_the_keys_and_the_write_commits(pair: Pair) -> None:
    pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pair.writer(mapping=replace(pair.mapping, transform=refuse_boom)) as writer:
        writer.insert(order(1001))  # transforms fine
        writer.insert(order(1002, status="boom"))
        writer.update((3,), {"status": "boom"})
        writer.upsert(order(5, status="boom"))
        writer.delete((4,))  # nothing left to transform
    assert queued(pair) == {(1002,): "upsert", (3,): "upsert", (5,): "upsert"}
    assert old_row(pair, 1002).status == old_row(pair, 3).status == old_row(pair, 5).status == "boom"
    assert old_row(pair, 4) is None and old_row(pair, 1001) is not None
    drain_queue(pair.old, pair.new, pair.store.engine, pair.mapping, pair.name)  # the transform fixed
    assert pair.rows("old") == pair.rows("new")


def test_a_failing_sql_column_queues_the_keys_and_the_write_commits(pair: Pair) -> None:
    pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    columns = tuple(
        ColumnMap(c.source, c.target, sql="so_no_such_function(note)") if c.target == "note" else c
        for c in pair.mapping.columns
    )
    broken: TableMapping = replace(pair.mapping, columns=columns)
    with pair.writer(mapping=broken) as writer:
        writer.insert(order(1001, note="new"))
        writer.update((3,), {"note": "updated"})
        writer.upsert(order(5, note="upserted"))
        writer.delete((4,))
    assert queued(pair) == {(1001,): "upsert", (3,): "upsert", (5,): "upsert", (4,): "delete"}
    assert [old_row(pair, i).note for i in (1001, 3, 5)] == ["new", "updated", "upserted"]
    assert old_row(pair, 4) is None
    drain_queue(pair.old, pair.new, pair.store.engine, pair.mapping, pair.name)
    assert pair.rows("old") == pair.rows("new")
