"""Expand/contract on the real servers: sync both ways under concurrent writes while the column
backfill runs, validation finding a planted value, contract, and a rollback that restores the
table exactly (schema and rows)."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import make_spec

from shiftover.schema import backfill as backfill_module
from shiftover.schema.backfill import backfill_columns, make_throttle
from shiftover.schema.columns import Target, drop_old_columns, expand, install_sync, remove_sync, rollback_expansion
from shiftover.schema.errors import ColumnMismatchError
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ExpandContractSpec
from shiftover.schema.validate import validate_columns

ROWS = 3_000  # the rows conftest.create_orders writes


def cents(amount: object) -> object:
    return None if amount is None else int((Decimal(str(amount)) * 100).to_integral_value())


def rows_out_of_step(target: Target) -> list[tuple[object, ...]]:
    """Checked in Python too, not only by the code under test."""
    with target.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount, amount_cents FROM orders")).all()
    return [tuple(r) for r in rows if cents(r.amount) != (None if r.amount_cents is None else int(r.amount_cents))]


def expand_and_sync(target: Target, spec: ExpandContractSpec) -> None:
    expand(target, spec)
    install_sync(target, spec)


def expand_and_backfill(target: Target, spec: ExpandContractSpec, store_engine: sa.Engine) -> None:
    expand_and_sync(target, spec)
    assert backfill_columns(target, spec, store_engine).complete


class Writers:
    """Application writes through the old column and through the new one, on two threads."""

    def __init__(self, target: Target, sides: tuple[str, ...] = ("old", "new"), first_id: int = 100_000) -> None:
        self.engine = target.engine
        self.stop = threading.Event()
        self.count = dict.fromkeys(sides, 0)
        self.errors: list[str] = []
        self.first_id = first_id
        self.threads = [threading.Thread(target=self._run, args=(side,)) for side in sides]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _run(self, side: str) -> None:
        rnd = random.Random(side)
        next_id = self.first_id + (0 if side == "old" else 100_000)
        while not self.stop.is_set():
            i = rnd.randint(1, ROWS)
            try:
                with self.engine.begin() as conn:
                    if side == "old":
                        conn.execute(
                            sa.text("UPDATE orders SET amount = :a WHERE id = :i"),
                            {"a": f"{rnd.randint(0, 99_999) / 100:.2f}", "i": i},
                        )
                        conn.execute(
                            sa.text("INSERT INTO orders (id, amount) VALUES (:i, :a)"), {"i": next_id, "a": "12.34"}
                        )
                    else:
                        conn.execute(
                            sa.text("UPDATE orders SET amount_cents = :c WHERE id = :i"),
                            {"c": rnd.randint(0, 99_999), "i": i},
                        )
                        conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (:i, 4321)"), {"i": next_id})
                next_id += 1
                self.count[side] += 1
            except sa.exc.DBAPIError as error:  # none expected: the test asserts there are none
                self.errors.append(str(error.orig)[:100])


def test_writes_through_old_and_new_stay_in_step_while_backfilling(
    orders: tuple[Target, ExpandContractSpec], control_store
) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    with Writers(target, sides=("old",), first_id=500_000) as early:  # live through the DDL too
        wait_for_writes(early)
        expand_and_sync(target, spec)
        backfill_and_check(target, spec, control_store)
        wait_for_writes(early)
    assert early.errors == [], early.errors[:3]  # no write failed while columns and triggers were added
    assert rows_out_of_step(target) == [] and validate_columns(target, spec).passed

    remove_sync(target, spec)
    drop_old_columns(target, spec)
    assert "amount" not in target.column_names() and "amount_cents" in target.column_names()
    assert snapshot_table(target.engine, "orders", ("id",)).triggers == ()


def wait_for_writes(writers: Writers, count: int = 5) -> None:
    deadline, start = time.monotonic() + 30, dict(writers.count)
    while min(writers.count[k] - start[k] for k in start) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert min(writers.count[k] - start[k] for k in start) >= count, f"writers failing: {writers.errors[:3]}"


def backfill_and_check(target: Target, spec: ExpandContractSpec, control_store) -> None:  # type: ignore[no-untyped-def]
    with Writers(target) as writers:
        deadline = time.monotonic() + 30
        while min(writers.count.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert min(writers.count.values()) >= 5, f"writers failing: {writers.errors[:3]}"
        before = dict(writers.count)
        report = backfill_columns(target, spec, control_store.engine)
        during = {k: writers.count[k] - before[k] for k in before}
    assert report.complete and report.batches >= ROWS // spec.backfill.chunk_rows
    assert min(during.values()) > 0, f"no concurrent writes during the backfill: {during}"
    print(f"writes {writers.count}, during the backfill {during}, failed {len(writers.errors)}")
    assert writers.errors == []  # no application write failed
    assert rows_out_of_step(target) == []
    validation = validate_columns(target, spec).require()
    assert [c.mismatches for c in validation.checks] == [0, 0]
    with target.engine.connect() as conn:
        inserted_new = conn.execute(sa.text("SELECT amount, amount_cents FROM orders WHERE id = 200000")).one()
        assert (Decimal(str(inserted_new.amount)), inserted_new.amount_cents) == (Decimal("43.21"), 4321)
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 100000")).scalar() == 1234
        # one statement: writers may still insert between two counts
        assert (
            conn.execute(sa.text("SELECT count(*) FROM orders WHERE channel IS NULL OR channel <> 'web'")).scalar() == 0
        )


def test_a_resumed_backfill_starts_after_the_last_saved_batch(
    orders: tuple[Target, ExpandContractSpec], control_store
) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    expand_and_sync(target, spec)
    first = backfill_columns(target, spec, control_store.engine, time_budget_seconds=0.0)
    assert not first.complete and first.batches == 1 and first.rows_updated == spec.backfill.chunk_rows - 1
    second = backfill_columns(target, spec, control_store.engine)
    assert second.complete and second.resumed_from == (spec.backfill.chunk_rows,)
    assert second.rows_updated == ROWS - spec.backfill.chunk_rows  # (row 7, in the first batch, is NULL: up(NULL) too)
    assert validate_columns(target, spec).passed


def test_the_backfill_rests_after_each_batch_as_its_spec_asks(
    orders: tuple[Target, ExpandContractSpec], control_store, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """``nice_ratio: 2``: after each batch a rest twice the batch's time, timed here around the batch
    itself; every row comes out in step all the same."""
    target, spec = orders
    spec = make_spec(
        target.engine.url.render_as_string(hide_password=False), backfill={"chunk_rows": 250, "nice_ratio": 2.0}
    )
    expand_and_sync(target, spec)
    batch_seconds: list[float] = []
    run_batch = backfill_module.update_batch

    def timed_batch(*args: object) -> tuple[object, int]:
        t0 = time.monotonic()
        try:
            return run_batch(*args)  # type: ignore[arg-type]
        finally:
            batch_seconds.append(time.monotonic() - t0)

    monkeypatch.setattr(backfill_module, "update_batch", timed_batch)
    throttle = make_throttle(spec, control_store.engine)
    rests: list[float] = []
    throttle.sleep = rests.append
    report = backfill_columns(target, spec, control_store.engine, throttle=throttle)
    assert report.complete and len(rests) == report.batches == len(batch_seconds) >= ROWS // spec.backfill.chunk_rows
    for rest, batch in zip(rests, batch_seconds, strict=True):
        assert 2 * batch <= rest <= 2 * batch + 0.2  # the one taken here sits inside the loop's own timing
    assert rows_out_of_step(target) == []


def test_validation_finds_a_planted_wrong_value(orders: tuple[Target, ExpandContractSpec], control_store) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    expand_and_backfill(target, spec, control_store.engine)
    assert validate_columns(target, spec).passed
    with target.engine.begin() as conn:  # through the triggers a write stays in step: plant it behind them
        conn.execute(sa.text("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 42"))
    assert validate_columns(target, spec).passed
    remove_sync(target, spec)
    with target.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 42"))
    with pytest.raises(ColumnMismatchError) as caught:
        validate_columns(target, spec).require()
    assert caught.value.count == 1 and caught.value.keys == ((42,),)
    with target.engine.connect() as conn:  # the query in the error lists the row
        assert conn.execute(sa.text(caught.value.query)).all() == [(42,)]


def test_a_claim_of_reversibility_is_checked(orders: tuple[Target, ExpandContractSpec], control_store) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    lossy = spec.model_copy(
        update={"operations": (spec.operations[0].model_copy(update={"down": "amount_cents / 100.0 + 0.01"}),)}
    )
    expand_and_backfill(target, lossy, control_store.engine)
    report = validate_columns(target, lossy)
    assert [c.mismatches for c in report.checks] == [0, ROWS - 1]


def test_rollback_before_contract_restores_the_table_exactly(
    orders: tuple[Target, ExpandContractSpec], control_store
) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    before = snapshot_table(target.engine, "orders", ("id",))
    expand_and_backfill(target, spec, control_store.engine)
    assert snapshot_table(target.engine, "orders", ("id",)) != before
    rollback_expansion(target, spec)
    assert snapshot_table(target.engine, "orders", ("id",)) == before


def test_rollback_keeps_writes_made_through_the_new_column(
    orders: tuple[Target, ExpandContractSpec], control_store
) -> None:  # type: ignore[no-untyped-def]
    target, spec = orders
    expand_and_sync(target, spec)
    with target.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = 555 WHERE id = 3"))
        conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (9001, 1001)"))
    rollback_expansion(target, spec)
    with target.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount FROM orders WHERE id IN (3, 9001) ORDER BY id")).all()
    assert [(r.id, Decimal(str(r.amount))) for r in rows] == [(3, Decimal("5.55")), (9001, Decimal("10.01"))]
    assert target.column_names() == ["id", "amount", "note"]


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_new_code_inserting_only_the_new_column_fills_a_not_null_old_one(
    kind: str, database_url, control_store
) -> None:  # type: ignore[no-untyped-def]
    """BEFORE triggers run before the NOT NULL check on PostgreSQL and MariaDB (not on SQLite, whose
    AFTER triggers fill the old column too late: README lists it)."""
    url = database_url(kind)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, note varchar(40))")
        )
        conn.execute(sa.text("INSERT INTO orders VALUES (1, 1.25, 'a')"))
    spec = make_spec(url)
    target = Target.of(engine, spec)
    expand_and_sync(target, spec)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (2, 250)"))
    backfill_columns(target, spec, control_store.engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount, amount_cents FROM orders ORDER BY id")).all()
    assert [(r.id, Decimal(str(r.amount)), r.amount_cents) for r in rows] == [
        (1, Decimal("1.25"), 125),
        (2, Decimal("2.50"), 250),
    ]
    engine.dispose()


def test_the_backfills_connections_go_back_to_the_pool_with_the_triggers_on(
    orders: tuple[Target, ExpandContractSpec], control_store
) -> None:  # type: ignore[no-untyped-def]
    """The backfill turns the sync triggers off for its own session only: after a complete run, and
    after one stopped by its fence mid-way, every pooled connection's write through the old column
    reaches the new one again."""
    target, spec = orders
    spec = make_spec(target.engine.url.render_as_string(hide_password=False), backfill={"chunk_rows": 500})
    expand_and_sync(target, spec)
    fenced: list[int] = []

    def fence() -> None:
        fenced.append(1)
        if len(fenced) == 3:
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        backfill_columns(target, spec, control_store.engine, fence=fence)
    assert backfill_columns(target, spec, control_store.engine).complete
    held = [target.engine.connect() for _ in range(4)]  # every connection the pool holds, and more
    try:
        for i, conn in enumerate(held, start=11):
            with conn.begin():
                conn.execute(sa.text("UPDATE orders SET amount = :a WHERE id = :i"), {"a": f"{i}.34", "i": i})
    finally:
        for conn in held:
            conn.close()
    assert rows_out_of_step(target) == []
    with target.engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT id, amount_cents FROM orders WHERE id BETWEEN 11 AND 14")).all())
    assert {k: int(v) for k, v in got.items()} == {i: i * 100 + 34 for i in range(11, 15)}


def test_a_batch_session_takes_a_fresh_connection_after_an_idle_spell(
    orders: tuple[Target, ExpandContractSpec],
) -> None:
    target, _ = orders
    with backfill_module.BatchSession(target.engine, idle_seconds=60) as session:
        assert session.connection() is session.connection()
    with backfill_module.BatchSession(target.engine, idle_seconds=0.01) as session:
        first = session.connection()
        time.sleep(0.05)
        assert session.connection() is not first and first.closed
