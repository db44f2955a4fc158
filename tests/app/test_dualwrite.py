"""Every dual-writer mode on the real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shiftover.dualwrite import DualWriter
from shiftover.errors import SpecError
from shiftover.flags.routing import WriteMode
from shiftover.mapping import ColumnMap
from shiftover.reconcile import drain_queue, queue_depth

from .conftest import Pair, order, unreachable


@pytest.fixture(params=["pg", "maria", "sqlite"])
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.getfixturevalue(f"{request.param}_pair")


def exercise(writer: DualWriter) -> None:
    """Every kind of write: insert, update, upsert (new and existing), delete."""
    writer.insert(order(1001))
    writer.update((1001,), {"status": "paid", "amount": Decimal("99.99")})
    writer.upsert(order(1002, note="upserted"))
    writer.upsert(order(3, status="cancelled"))
    writer.delete((4,))
    writer.update((5,), {"note": "touched"})
    writer.update((6,), {"id": 3000, "note": "moved"})  # a key change: old key gone, new key present


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_dual_old_primary_keeps_both_equal(pair: Pair, asynchronous: bool) -> None:
    pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pair.writer(asynchronous=asynchronous) as writer:
        exercise(writer)
        writer.flush()
        old = pair.rows("old")
        assert old == pair.rows("new")
    ids = [r[0] for r in old]
    assert "1001" in ids and "1002" in ids and "3000" in ids and "4" not in ids and "6" not in ids
    assert queue_depth(pair.store.engine, pair.name)["pending"] == 0


def test_old_only_writes_old_alone(pair: Pair) -> None:
    with pair.writer() as writer:
        exercise(writer)
    old, new = pair.rows("old"), pair.rows("new")
    assert "1001" in [r[0] for r in old] and "1001" not in [r[0] for r in new]
    assert "4" in [r[0] for r in new]


def test_dual_new_primary_writes_new_then_old(pair: Pair) -> None:
    pair.set_mode(WriteMode.DUAL_NEW_PRIMARY)
    with pair.writer() as writer:
        exercise(writer)
        writer.flush()
    assert pair.rows("old") == pair.rows("new")
    assert "1002" in [r[0] for r in pair.rows("old")]


def test_new_only_leaves_old_untouched(pair: Pair) -> None:
    pair.set_mode(WriteMode.NEW_ONLY)
    before = pair.rows("old")
    with pair.writer() as writer:
        exercise(writer)
        assert writer.read((1001,))["status"] == "paid"  # type: ignore[index]
    assert pair.rows("old") == before
    assert "1001" in [r[0] for r in pair.rows("new")]


def test_new_primary_refused_for_computed_columns(pg_pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    cols = tuple(
        ColumnMap(c.source, c.target, "upper(status)" if c.target == "status" else None)
        for c in pg_pair.mapping.columns
    )
    computed = replace(pg_pair.mapping, columns=cols)
    pg_pair.set_mode(WriteMode.DUAL_NEW_PRIMARY)
    with pytest.raises(SpecError, match="computed by SQL"):
        pg_pair.writer(mapping=computed)
    pg_pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pg_pair.writer(mapping=computed) as w:
        pg_pair.set_mode(WriteMode.DUAL_NEW_PRIMARY)  # a switch this mapping cannot serve
        with caplog.at_level(logging.ERROR):
            w.update((2,), {"status": "paid", "note": "after the refused switch"})
    assert "refusing to follow" in caplog.text
    with pg_pair.new.connect() as conn:  # still old-primary: old written, new kept equal through the mapping
        assert conn.execute(sa.text("SELECT status, note FROM orders WHERE id = 2")).one() == (
            "PAID",
            "after the refused switch",
        )


def test_secondary_failure_never_fails_the_caller_and_is_queued(pair: Pair) -> None:
    pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    dead = unreachable(pair.new)
    with pair.writer(new=dead) as writer:
        exercise(writer)
    depth = queue_depth(pair.store.engine, pair.name)
    assert depth["pending"] == 8
    result = drain_queue(pair.old, pair.new, pair.store.engine, pair.mapping, pair.name)
    assert (result.direction, result.synced, result.failed) == ("old->new", 7, 0)  # 1001 queued twice
    assert pair.rows("old") == pair.rows("new")
    assert queue_depth(pair.store.engine, pair.name) == {"pending": 0, "dead": 0, "done": 8}


def test_async_keeps_per_key_order_under_concurrency(pg_pair: Pair) -> None:
    pg_pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pg_pair.writer(asynchronous=True, workers=3) as writer:

        def hammer(thread: int) -> None:
            for i in range(40):
                writer.update(((i % 5) + 1,), {"note": f"t{thread}-{i}"})

        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writer.flush()
    assert pg_pair.rows("old") == pg_pair.rows("new")


def test_async_queue_overflow_goes_to_the_durable_queue(pg_pair: Pair) -> None:
    pg_pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pg_pair.writer(asynchronous=True, queue_size=1, workers=1) as writer:
        for i in range(1, 31):
            writer.update((i,), {"note": "burst"})
    assert queue_depth(pg_pair.store.engine, pg_pair.name)["pending"] > 0  # nothing silently dropped
    drain_queue(pg_pair.old, pg_pair.new, pg_pair.store.engine, pg_pair.mapping, pg_pair.name)
    assert pg_pair.rows("old") == pg_pair.rows("new")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    customer_id: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    status: Mapped[str] = mapped_column(sa.String(20))
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[sa.DateTime] = mapped_column(sa.DateTime)
    updated_at: Mapped[sa.DateTime] = mapped_column(sa.DateTime)


def test_orm_session_commits_are_replicated_rollbacks_are_not(pair: Pair) -> None:
    pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pair.writer() as writer:
        with Session(pair.old) as session:
            writer.attach(session)
            session.add(Order(**order(2001)))
            session.get(Order, 6).status = "shipped"  # type: ignore[union-attr]
            session.delete(session.get(Order, 7))
            session.commit()
            session.add(Order(**order(2002)))
            session.flush()
            session.rollback()
    assert pair.rows("old") == pair.rows("new")
    assert "2001" in [r[0] for r in pair.rows("new")] and "2002" not in [r[0] for r in pair.rows("new")]
