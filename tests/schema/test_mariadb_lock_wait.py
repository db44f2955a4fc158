"""MariaDB's lock bound (issue 13). ``lock_wait_timeout`` and ``ALTER ... WAIT n`` take whole
seconds and read ``WAIT 0.5`` as ``WAIT 0``, that is NOWAIT: with the default 500 ms every ALTER
gave up at once whenever a writer's statement held the table, and NOT NULL's online rebuild, which
needs the exclusive metadata lock at its start and again at its end, was thrown away attempt after
attempt under a steady writer. Now the statement carries the bound rounded up to whole seconds and
a watchdog ends a wait that reaches ``lock.timeout_ms``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pymysql
import pytest
import sqlalchemy as sa
from conftest import constant_writer, create_orders, make_spec

from shiftover.schema.columns import Target
from shiftover.schema.constraints import enforce_constraints
from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import LockTimeoutError
from shiftover.schema.locking import run_ddl


def holding(url: str) -> pymysql.connections.Connection:
    """A session in a transaction that has read ``orders``: it holds the table's metadata lock."""
    parts = sa.make_url(url)
    conn = pymysql.connect(host=parts.host, port=parts.port or 3306, user=parts.username, database=parts.database)
    conn.cursor().execute("SELECT count(*) FROM orders")
    return conn


def columns(engine: sa.Engine) -> dict[str, bool]:
    return {str(c["name"]): bool(c["nullable"]) for c in sa.inspect(engine).get_columns("orders")}


def waiting_for_metadata_lock(engine: sa.Engine) -> bool:
    query = "SELECT count(*) FROM information_schema.processlist WHERE state = 'Waiting for table metadata lock'"
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(f"{query} AND db = database()")).scalar())


def test_a_lock_held_for_less_than_a_sub_second_bound_is_waited_for(database_url: Callable[[str], str]) -> None:
    """Before: ``WAIT 0.8`` was NOWAIT, so the ALTER failed at once (LockTimeoutError after 1 attempt)."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=100)
    lock = make_spec(url, lock={"timeout_ms": 800, "attempts": 1}).lock
    holder = holding(url)
    release = threading.Timer(0.3, holder.rollback)
    release.start()
    statement = schema_dialect(engine).add_column("orders", "extra", "int", None, lock.timeout_ms)
    try:
        report = run_ddl(engine, [statement], lock, table="orders")
    finally:
        release.join()
        holder.close()
    assert report.attempts == [1] and report.lock_timeouts == 0
    assert "extra" in columns(engine)


def test_a_longer_wait_is_cut_at_the_bound_and_writers_behind_it_go_on(database_url: Callable[[str], str]) -> None:
    """A transaction holds the table throughout: each attempt waits, the watchdog ends it at 300 ms,
    and a write queued behind the waiting ALTER goes through well before the server's own whole
    second would have ended the wait."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=100)
    lock = make_spec(url, lock={"timeout_ms": 300, "attempts": 2, "backoff_ms": 0}).lock
    holder = holding(url)
    waits: list[float] = []
    done = threading.Event()

    def write_behind_the_alter() -> None:
        while not waiting_for_metadata_lock(engine):
            if done.wait(0.005):
                return  # the ALTER never waited
        t0 = time.monotonic()
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE orders SET note = 'w' WHERE id = 1"))
        waits.append(time.monotonic() - t0)

    writer = threading.Thread(target=write_behind_the_alter)
    writer.start()
    statement = schema_dialect(engine).add_column("orders", "extra", "int", None, lock.timeout_ms)
    try:
        with pytest.raises(LockTimeoutError) as caught:
            run_ddl(engine, [statement], lock, table="orders")
    finally:
        done.set()
        writer.join()
        holder.close()
    assert caught.value.attempts == 2
    assert "extra" not in columns(engine)
    assert len(waits) == 1 and waits[0] < 0.9, waits  # the server's WAIT 1 alone would hold it about 1 s


def test_set_not_null_under_a_constant_writer_finishes_within_the_attempts(
    database_url: Callable[[str], str],
) -> None:
    """The online rebuild (INPLACE, LOCK=NONE) of 50k rows with a writer updating an indexed column
    the whole time, under the default 500 ms bound and 3 attempts. Before: every attempt whose start
    or end met a write in flight failed at once (4 to 27 attempts seen)."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=50_000)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
        conn.execute(sa.text("ALTER TABLE orders ADD INDEX ix_orders_note (note)"))
    spec = make_spec(
        url, operations=[{"op": "set_not_null", "column": "amount"}], lock={"attempts": 3, "backoff_ms": 50}
    )
    assert spec.lock.timeout_ms == 500
    with constant_writer(url, 50_000) as writes:
        report = enforce_constraints(Target.of(engine, spec), spec)
    assert report.statements == 1 and len(report.attempts) == 1 and report.attempts[0] <= spec.lock.attempts
    assert columns(engine)["amount"] is False
    assert writes.errors == []
    worst = max(writes.latencies)
    assert worst < spec.lock.timeout_ms / 1000, worst
    print(f"set_not_null: attempts {report.attempts}, {len(writes.latencies)} writes, worst {worst * 1000:.0f} ms")
