"""MariaDB commits each DDL statement alone, so between drop_old_columns' ``DROP TRIGGER`` of the
forward triggers and its ``DROP COLUMN`` an old-version write to the old column used to succeed
without reaching the new column, and was then dropped with the column: lost. The steps now run
under ``LOCK TABLES ... WRITE``, held across the implicit commits.

An old pod updates the old column (increasing values, each success recorded) and a new pod the new
column (on other rows) while drop_old_columns runs, ten rounds on a small table. A test hook sleeps
after each statement of the drop (through ``run_literal``), widening the window the fix closes:
without the lock, the old pod's writes made in it succeed and are lost. After each round every
row's last successful old-column write reads back as up(value) computed here; old-column writes
after the drop fail with 1054 (unknown column) and are counted, not lost; no new-pod write fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pymysql
import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec

import shiftover.schema.locking as locking
from shiftover.control.store import ControlStore
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target, drop_old_columns, expand, install_sync, stop_sync
from shiftover.schema.errors import LockTimeoutError
from shiftover.schema.locking import run_ddl

ROWS = 200
OLD_KEYS = range(1, 101)  # the old pod's rows
NEW_KEYS = range(101, 201)  # the new pod's rows
PAUSE_S = 0.15  # the hook's sleep after each statement of drop_old_columns
UNKNOWN_COLUMN = 1054


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


@dataclass
class Pods:
    """What the two application instances saw during one round."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    last_old: dict[int, Decimal] = field(default_factory=dict)  # key -> last old-column value written
    last_new: dict[int, int] = field(default_factory=dict)  # key -> last new-column value written
    old_errors: list[int] = field(default_factory=list)  # MariaDB error codes of refused old writes
    new_errors: list[str] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=lambda: {"old": 0, "new": 0})

    def old_pod(self) -> None:
        """Still on the old version: updates ``amount``, increasing values, one autocommit each."""
        i = 0
        with sa.create_engine(self.url, poolclass=sa.pool.NullPool).connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self.stop.is_set():
                i += 1
                key, amount = OLD_KEYS[i % len(OLD_KEYS)], Decimal(i) / 100
                try:
                    n = conn.execute(
                        sa.text("UPDATE orders SET amount = :a WHERE id = :k"), {"a": str(amount), "k": key}
                    ).rowcount
                except sa.exc.DBAPIError as error:
                    self.old_errors.append(int(getattr(error.orig, "args", (0,))[0]))
                    continue
                assert n == 1
                self.last_old[key] = amount
                self.done["old"] += 1

    def new_pod(self) -> None:
        """On the new version: updates ``amount_cents`` of other rows."""
        i = 0
        with sa.create_engine(self.url, poolclass=sa.pool.NullPool).connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self.stop.is_set():
                i += 1
                key = NEW_KEYS[i % len(NEW_KEYS)]
                try:
                    conn.execute(sa.text("UPDATE orders SET amount_cents = :v WHERE id = :k"), {"v": i, "k": key})
                except sa.exc.DBAPIError as error:
                    self.new_errors.append(str(error.orig)[:120])
                    continue
                self.last_new[key] = i
                self.done["new"] += 1


def test_no_old_column_write_is_lost_and_no_new_column_write_fails_while_mariadb_drops_the_old_columns(
    database_url: Callable[[str], str], control_store: ControlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_url("mariadb")
    real_run = locking.run_literal
    hooked = threading.local()

    def slow_run(conn: sa.Connection, statement: str) -> None:
        real_run(conn, statement)
        if getattr(hooked, "on", False) and statement.split()[0] in ("DROP", "ALTER", "LOCK"):
            time.sleep(PAUSE_S)  # widen the window between the trigger drops and the column drop

    monkeypatch.setattr(locking, "run_literal", slow_run)
    failed_after_drop = 0
    for _ in range(10):
        engine = create_orders(url, ROWS)
        spec = make_spec(url)
        target = Target.of(engine, spec)
        expand(target, spec)
        install_sync(target, spec)
        assert backfill_columns(target, spec, control_store.engine).complete
        stop_sync(target, spec)

        pods = Pods(url)
        threads = [threading.Thread(target=pods.old_pod), threading.Thread(target=pods.new_pod)]
        for thread in threads:
            thread.start()
        try:
            while pods.done["old"] < 50 or pods.done["new"] < 50:
                time.sleep(0.005)
            hooked.on = True
            drop_old_columns(target, spec)
            hooked.on = False
            time.sleep(0.05)  # writes after the drop: the old pod's fail, the new pod's go on
        finally:
            hooked.on = False
            pods.stop.set()
            for thread in threads:
                thread.join()

        assert target.column_names() == ["id", "note", "amount_cents", "channel"]
        assert set(pods.old_errors) <= {UNKNOWN_COLUMN}, pods.old_errors
        assert pods.new_errors == []
        failed_after_drop += len(pods.old_errors)
        with engine.connect() as conn:
            got = dict(conn.execute(sa.text("SELECT id, amount_cents FROM orders")).tuples().all())
        lost = {k: (v, cents(v), got[k]) for k, v in pods.last_old.items() if got[k] != cents(v)}
        assert lost == {}, f"{len(lost)} rows' last successful old-column write not carried forward: {lost}"
        assert {k: got[k] for k in pods.last_new} == pods.last_new
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE orders"))
        engine.dispose()
    assert failed_after_drop > 0  # the old pod did write on past the drop, and was refused loudly


def holding(url: str) -> pymysql.connections.Connection:
    """A session in a transaction that has read ``orders``: it holds the table's metadata lock."""
    parts = sa.make_url(url)
    conn = pymysql.connect(host=parts.host, port=parts.port or 3306, user=parts.username, database=parts.database)
    conn.cursor().execute("SELECT count(*) FROM orders")
    return conn


def trigger_names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT trigger_name FROM information_schema.triggers WHERE event_object_schema = database() "
                "AND event_object_table = 'orders' ORDER BY trigger_name"
            )
        ).all()
    return [str(r[0]) for r in rows]


def test_the_table_lock_waits_no_longer_than_the_bound_and_a_timed_out_drop_drops_nothing(
    database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """An open transaction holds the table: ``LOCK TABLES`` waits, the watchdog ends each attempt at
    300 ms, the step fails naming it, and neither a trigger nor a column has gone (an old-version
    write is still carried forward). Once the transaction ends the step runs."""
    url = database_url("mariadb")
    engine = create_orders(url, ROWS)
    spec = make_spec(url, lock={"timeout_ms": 300, "attempts": 2, "backoff_ms": 0})
    target = Target.of(engine, spec)
    expand(target, spec)
    install_sync(target, spec)
    assert backfill_columns(target, spec, control_store.engine).complete
    stop_sync(target, spec)
    forward = trigger_names(engine)
    assert len(forward) == 2
    holder = holding(url)
    t0 = time.monotonic()
    try:
        with pytest.raises(LockTimeoutError) as caught:
            drop_old_columns(target, spec)
    finally:
        holder.close()
    assert time.monotonic() - t0 < 1.5  # two attempts of 300 ms; the server's own WAIT 1 would take 2 s
    assert caught.value.statement.startswith("LOCK TABLES") and caught.value.attempts == 2
    assert trigger_names(engine) == forward and "amount" in target.column_names()
    with engine.begin() as conn:  # no session of the pool kept the table locked
        conn.execute(sa.text("SET STATEMENT lock_wait_timeout = 2 FOR UPDATE orders SET amount = 4.56 WHERE id = 1"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 1")).scalar() == 456

    drop_old_columns(target, spec)
    assert trigger_names(engine) == [] and target.column_names() == ["id", "note", "amount_cents", "channel"]


def test_an_attempt_failing_under_the_table_lock_leaves_no_pooled_session_holding_it(
    database_url: Callable[[str], str],
) -> None:
    """A statement failing after ``LOCK TABLES``: the connection goes back to the pool, where a
    rollback would not release the lock; ``end_ddl``'s ``UNLOCK TABLES`` does, so another session's
    write goes through (bounded here at 2 s, where a kept lock would fail it with 1205)."""
    url = database_url("mariadb")
    engine = create_orders(url, 10)
    lock = make_spec(url).lock
    with pytest.raises(sa.exc.DBAPIError):
        run_ddl(engine, ["ALTER TABLE orders DROP COLUMN no_such_column"], lock, table="orders", hold_table="orders")
    other = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with other.begin() as conn:
        conn.execute(sa.text("SET STATEMENT lock_wait_timeout = 2 FOR UPDATE orders SET note = 'w' WHERE id = 1"))
    with other.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM orders WHERE id = 1")).scalar() == "w"
    other.dispose()
