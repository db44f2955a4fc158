"""Between stop_sync and drop_old_columns (the retention period) an application instance still on
the old version (a pod not yet drained) may write the old column. stop_sync swaps the two-way sync
triggers for forward-only ones, so such a write still reaches the new column as up(old) and is not
lost when drop_old_columns drops the old column (it was: with the triggers simply dropped, the new
column kept its old value). A write through the new column no longer touches the old one. Values
are read back by plain SQL and compared with values computed in Python; the triggers are read from
each engine's own catalogue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import ROWS, amount_of, create_orders, make_spec

from shiftover.control.store import ControlStore
from shiftover.flags.client import FlagClient
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import (
    Target,
    drop_old_columns,
    expand,
    install_sync,
    planned_ddl,
    remove_sync,
    stop_sync,
)
from shiftover.schema.engines import schema_dialect
from shiftover.schema.spec import ExpandContractSpec
from shiftover.schema.writes import ColumnWrites

BASE = "so_sync_orders_amount_cents"
FORWARD = {
    "postgresql": [f"{BASE}_fwd"],
    "mysql": [f"{BASE}_fwd_ins", f"{BASE}_fwd_upd"],
    "sqlite": [f"{BASE}_fwd_ins", f"{BASE}_fwd_upd"],
}
TWO_WAY = {
    "postgresql": [BASE],
    "mysql": [f"{BASE}_ins", f"{BASE}_upd"],
    "sqlite": [f"{BASE}_ins", f"{BASE}_upd"],
}


def cents(amount: object) -> int | None:
    """up(old) computed here: the amount in cents, exactly."""
    return None if amount is None else int((Decimal(str(amount)) * 100).to_integral_value())


def catalogue(engine: sa.Engine) -> dict[str, str]:
    """Every trigger on ``orders`` and its definition, as the engine's own catalogue has them
    (PostgreSQL: with its function's source; the sync functions left without a trigger too)."""
    name = engine.dialect.name
    with engine.connect() as conn:
        if name == "postgresql":
            rows = conn.execute(
                sa.text(
                    "SELECT t.tgname, pg_get_triggerdef(t.oid) || ' ' || p.prosrc FROM pg_trigger t "
                    "JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = 'orders'::regclass AND NOT t.tgisinternal"
                )
            ).all()
            orphans = conn.execute(
                sa.text(
                    "SELECT proname, prosrc FROM pg_proc p WHERE proname LIKE 'so_sync_orders%' "
                    "AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)"
                )
            ).all()
            return {str(r[0]): str(r[1]) for r in rows} | {f"function {r[0]}": str(r[1]) for r in orphans}
        if name in ("mysql", "mariadb"):
            rows = conn.execute(
                sa.text(
                    "SELECT trigger_name, concat(action_timing, ' ', event_manipulation, ' ', action_statement) "
                    "FROM information_schema.triggers WHERE event_object_schema = database() "
                    "AND event_object_table = 'orders'"
                )
            ).all()
        else:
            rows = conn.execute(
                sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'orders'")
            ).all()
        return {str(r[0]): str(r[1]) for r in rows}


def triggers(engine: sa.Engine) -> list[str]:
    return sorted(catalogue(engine))


def read(engine: sa.Engine, columns: str = "amount, amount_cents") -> dict[int, tuple[object, ...]]:
    """Every row's ``columns`` by id, by plain SQL; a float (SQLite's numeric) as the Decimal it prints."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, {columns} FROM orders ORDER BY id")).all()
    return {r[0]: tuple(Decimal(str(v)) if isinstance(v, float) else v for v in r[1:]) for r in rows}


def contract_ready(target: Target, spec: ExpandContractSpec, store: ControlStore) -> None:
    """Expanded, synced both ways and backfilled: every row in step, as before stop_sync."""
    expand(target, spec)
    install_sync(target, spec)
    assert backfill_columns(target, spec, store.engine).complete


def test_after_stop_sync_a_write_to_the_old_column_is_carried_to_the_new_one_until_the_drop(
    orders: tuple[Target, ExpandContractSpec], control_store: ControlStore
) -> None:
    target, spec = orders
    engine, name = target.engine, target.engine.dialect.name
    contract_ready(target, spec, control_store)
    assert triggers(engine) == TWO_WAY[name]

    stop_sync(target, spec)
    assert triggers(engine) == FORWARD[name]
    with engine.begin() as conn:  # an old pod: the old column only
        conn.execute(sa.text("UPDATE orders SET amount = 12.34 WHERE id = 1"))
        conn.execute(sa.text("UPDATE orders SET amount = amount + 1 WHERE id = 3"))
        conn.execute(sa.text("UPDATE orders SET amount = 0.05 WHERE id = 7"))  # from NULL
        conn.execute(sa.text("INSERT INTO orders (id, amount) VALUES (9001, 56.78)"))
        conn.execute(sa.text("INSERT INTO orders (id, amount, note) VALUES (9002, NULL, 'none')"))
    with engine.begin() as conn:  # the new version: the new column only, the old one left as it was
        conn.execute(sa.text("UPDATE orders SET amount_cents = 999 WHERE id = 2"))
        conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (9003, 4321)"))
        conn.execute(sa.text("UPDATE orders SET note = 'only the note' WHERE id = 4"))
    rows = read(engine)
    assert rows[1][1] == int(Decimal("12.34") * 100) == 1234
    assert rows[3][1] == cents(amount_of(3) + 1) and rows[7][1] == 5
    assert rows[9001] == (Decimal("56.78"), 5678) and rows[9002] == (None, None)
    assert Decimal(str(rows[2][0])) == amount_of(2) and rows[2][1] == 999  # old not rewritten from new
    assert rows[9003] == (None, 4321)
    assert rows[4][1] == cents(amount_of(4))

    if name != "sqlite":  # the sync_off switch (a session variable: SQLite has none) is honoured still
        with engine.begin() as conn:
            schema_dialect(engine).sync_off(conn)
            conn.execute(sa.text("UPDATE orders SET amount = 1.11 WHERE id = 5"))
        assert read(engine)[5][1] == cents(amount_of(5))

    drop_old_columns(target, spec)
    assert target.column_names() == ["id", "note", "amount_cents", "channel"]
    assert triggers(engine) == []
    expected = {i: (cents(amount_of(i)) if i != 7 else None,) for i in range(1, ROWS + 1)}
    expected |= {1: (1234,), 2: (999,), 3: (cents(amount_of(3) + 1),), 7: (5,), 9001: (5678,), 9002: (None,)}
    expected |= {9003: (4321,)}
    if name != "sqlite":
        expected[5] = (cents(amount_of(5)),)
    assert read(engine, "amount_cents") == expected
    with engine.begin() as conn:  # the new version writes on
        conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (9004, 1)"))
        conn.execute(sa.text("UPDATE orders SET amount_cents = 2 WHERE id = 1"))
    assert read(engine, "amount_cents")[9004] == (1,) and read(engine, "amount_cents")[1] == (2,)


def test_a_resumed_stop_sync_ends_in_the_same_state_and_remove_sync_removes_the_forward_triggers(
    orders: tuple[Target, ExpandContractSpec], control_store: ControlStore
) -> None:
    target, spec = orders
    engine, name = target.engine, target.engine.dialect.name
    contract_ready(target, spec, control_store)
    stop_sync(target, spec)
    first = catalogue(engine)
    stop_sync(target, spec)  # resumed: the same forward triggers, no two-way one back
    assert catalogue(engine) == first and sorted(first) == FORWARD[name]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 3.21 WHERE id = 10"))
    assert read(engine)[10][1] == 321

    remove_sync(target, spec)  # whatever is there: the forward triggers too (and on PostgreSQL, functions)
    assert catalogue(engine) == {}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 4.56 WHERE id = 11"))
    assert read(engine)[11][1] == cents(amount_of(11))


def test_no_write_to_the_old_column_is_lost_while_stop_sync_swaps_the_triggers(
    orders: tuple[Target, ExpandContractSpec], control_store: ControlStore
) -> None:
    """An old pod updating the old column without pause while stop_sync runs (and runs again):
    with no moment where neither trigger exists, each write reads back new = up(old) in its own
    transaction, and every row ends so."""
    target, spec = orders
    engine = target.engine
    contract_ready(target, spec, control_store)
    stop, count = threading.Event(), [0]
    errors: list[str] = []
    lost: list[tuple[int, Decimal, object]] = []

    def old_pod() -> None:
        i = 0
        with engine.connect() as conn:
            while not stop.is_set():
                amount, key = Decimal(i % 99_999) / 100, i % 200 + 1
                try:
                    with conn.begin():
                        conn.execute(
                            sa.text("UPDATE orders SET amount = :a WHERE id = :i"), {"a": str(amount), "i": key}
                        )
                        # read back in the write's transaction: what the triggers did to this write (a later write
                        # to the row could hide a lost one from a read at the end)
                        got = conn.execute(
                            sa.text("SELECT amount_cents FROM orders WHERE id = :i"), {"i": key}
                        ).scalar()
                    if got != cents(amount):
                        lost.append((key, amount, got))
                    count[0] += 1
                except sa.exc.DBAPIError as error:  # SQLite: the DDL's write lock may outlast busy_timeout
                    errors.append(str(error.orig)[:100])
                i += 1

    def writes(n: int) -> None:
        seen = count[0]
        while count[0] < seen + n and thread.is_alive():
            time.sleep(0.001)

    thread = threading.Thread(target=old_pod)
    thread.start()
    try:
        for _ in range(10):
            writes(20)
            stop_sync(target, spec)
            writes(20)
            # the two-way triggers back beside the forward ones (an old write goes forward either way),
            # so that the next stop_sync swaps them again under the writer
            install_sync(target, spec)
        writes(20)
        stop_sync(target, spec)
        writes(20)
    finally:
        stop.set()
        thread.join()
    assert errors == [] and lost == [] and count[0] > 200
    rows = read(engine)
    assert {i: r for i, r in rows.items() if cents(r[0]) != r[1]} == {}


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_sync_application_installs_no_forward_trigger_and_column_writes_still_carry_old_writes(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    url = database_url(kind)
    spec = make_spec(url, sync="application")
    target = Target.of(create_orders(url, 50), spec)
    contract_ready(target, spec, control_store)
    stop_sync(target, spec)
    assert triggers(target.engine) == []
    writes = ColumnWrites(FlagClient(control_store.engine, start=False), spec, target.engine)
    assert not writes.writes_new()  # an old pod's shape: the old column; new = up(old) in the same statement
    assert writes.update(3, {"amount": Decimal("7.89")}) == 1
    assert read(target.engine)[3] == (Decimal("7.89"), 789)
    drop_old_columns(target, spec)
    assert read(target.engine, "amount_cents")[3] == (789,)


def test_the_plan_shows_the_forward_triggers(orders: tuple[Target, ExpandContractSpec]) -> None:
    target, spec = orders
    name = target.engine.dialect.name
    ddl = planned_ddl(target, spec)
    created = [s for s in ddl["stop_sync"] if s.startswith("CREATE") and "TRIGGER" in s]
    assert [n for n in FORWARD[name] if any(f" {n} " in s for s in created)] == FORWARD[name], ddl["stop_sync"]
    assert any("forward-only" in s for s in ddl["stop_sync"] if s.startswith("--"))
    for stage in ("drop_old_columns", "rollback"):
        dropped = [s for s in ddl[stage] if s.startswith("DROP TRIGGER")]
        assert all(any(f" {n}" in s for s in dropped) for n in FORWARD[name] + TWO_WAY[name]), ddl[stage]
    first_column_drop = next(i for i, s in enumerate(ddl["drop_old_columns"]) if "DROP COLUMN" in s)
    last_trigger_drop = max(i for i, s in enumerate(ddl["drop_old_columns"]) if s.startswith("DROP TRIGGER"))
    assert last_trigger_drop < first_column_drop
    if name == "mysql":  # each drop commits alone there: the table is held from before the first to after the last
        plan = ddl["drop_old_columns"]
        last_column_drop = max(i for i, s in enumerate(plan) if "DROP COLUMN" in s)
        first_trigger_drop = min(i for i, s in enumerate(plan) if s.startswith("DROP TRIGGER"))
        assert plan.index("LOCK TABLES orders WRITE") < first_trigger_drop
        assert plan.index("UNLOCK TABLES") == last_column_drop + 1
    else:
        assert not any("LOCK TABLES" in s for s in ddl["drop_old_columns"])
