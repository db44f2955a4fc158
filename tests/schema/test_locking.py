"""A session holding a lock on the table makes the expand DDL time out and retry, and application
queries never wait behind it for longer than about one lock timeout (PostgreSQL and MariaDB: both
queue every later query behind a waiting ALTER)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.schema.columns import Target, expand, install_sync
from shiftover.schema.errors import LockTimeoutError
from shiftover.schema.locking import DdlReport, run_ddl

HOLD_SECONDS = 2.0


def holding_a_lock(engine: sa.Engine) -> sa.Connection:
    """An open transaction that read the table: PostgreSQL keeps its AccessShareLock, MariaDB its
    metadata lock, until it ends; the ALTER needs an exclusive one."""
    conn = engine.connect()
    conn.begin()
    conn.execute(sa.text("SELECT count(*) FROM orders")).scalar()
    return conn


def app_reads(engine: sa.Engine, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT amount FROM orders WHERE id = 5")).scalar()
        latencies.append(time.monotonic() - t0)
        time.sleep(0.005)


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_ddl_retries_while_a_lock_is_held_and_reads_do_not_queue(kind: str, database_url: Callable[[str], str]) -> None:
    from conftest import create_orders, make_spec

    url = database_url(kind)
    engine = create_orders(url, rows=100)
    spec = make_spec(url)  # lock timeout 200 ms, backoff 20..200 ms, 50 attempts
    target = Target.of(engine, spec)
    holder = holding_a_lock(sa.create_engine(url, poolclass=sa.pool.NullPool))
    report, failure = DdlReport(), []
    latencies: list[float] = []
    stop = threading.Event()
    # the application reads through a pool, as applications do: a new connection per read measured the
    # server's connect time under load (MariaDB's reached 100 ms) rather than any wait on the lock
    reader = threading.Thread(target=app_reads, args=(sa.create_engine(url), stop, latencies))
    ddl = threading.Thread(target=lambda: _capture(failure, lambda: expand(target, spec, report)))
    reader.start()
    ddl.start()
    time.sleep(HOLD_SECONDS)
    assert "amount_cents" not in target.column_names()  # still waiting for its lock
    holder.rollback()
    holder.close()
    ddl.join(timeout=30)
    time.sleep(0.2)
    stop.set()
    reader.join()
    assert not failure, failure
    assert {"amount_cents", "channel"} <= set(target.column_names())
    assert report.lock_timeouts >= 3, report
    worst = max(latencies)
    print(
        f"{kind}: {report.lock_timeouts} lock timeouts while held {HOLD_SECONDS}s; "
        f"{len(latencies)} reads, worst {worst * 1000:.0f} ms"
    )
    # Without the timeout a read would wait the whole HOLD_SECONDS behind the queued ALTER.
    assert len(latencies) > 20 and worst < spec.lock.timeout_ms / 1000 + 0.5


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_ddl_gives_up_naming_who_holds_the_lock(kind: str, database_url: Callable[[str], str]) -> None:
    from conftest import create_orders, make_spec

    url = database_url(kind)
    engine = create_orders(url, rows=10)
    spec = make_spec(url, lock={"timeout_ms": 100, "attempts": 3, "backoff_ms": 10})
    holder = holding_a_lock(sa.create_engine(url, poolclass=sa.pool.NullPool))
    own_id = "pg_backend_pid()" if kind == "postgres" else "connection_id()"
    holder_id = holder.execute(sa.text(f"SELECT {own_id}")).scalar()
    try:
        with pytest.raises(LockTimeoutError) as caught:
            expand(Target.of(engine, spec), spec)
    finally:
        holder.rollback()
        holder.close()
    assert caught.value.attempts == 3 and caught.value.blockers, caught.value
    named = " ".join(caught.value.blockers)
    assert (f"pid {holder_id} " if kind == "postgres" else f"connection {holder_id} ") in named, named
    assert "transaction open" in named


def test_a_lock_timeout_names_the_statement_that_waited(database_url: Callable[[str], str]) -> None:
    """The second of two statements run together waits: the error names it, not the first (it did)."""
    from conftest import create_orders

    from shiftover.schema.locking import run_ddl
    from shiftover.schema.spec import LockSpec

    url = database_url("postgres")
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE free_table (id int)"))
    holder = holding_a_lock(sa.create_engine(url, poolclass=sa.pool.NullPool))
    statements = ["ALTER TABLE free_table ADD COLUMN x int", "ALTER TABLE orders ADD COLUMN y int"]
    try:
        with pytest.raises(LockTimeoutError) as caught:
            run_ddl(engine, statements, LockSpec(timeout_ms=100, attempts=2, backoff_ms=10), table="orders")
    finally:
        holder.rollback()
        holder.close()
    assert caught.value.statement == "ALTER TABLE orders ADD COLUMN y int", caught.value
    assert "free_table" not in str(caught.value)


def _capture(failures: list[BaseException], work: Callable[[], object]) -> None:
    try:
        work()
    except BaseException as error:  # reported by the test's assertion
        failures.append(error)


def test_reinstalling_the_sync_goes_on_beside_an_open_read(database_url: Callable[[str], str]) -> None:
    """A re-run of the sync step (after a crash, say) replaces the trigger under ShareRowExclusiveLock,
    which an open read transaction does not block; a DROP TRIGGER first would need the
    AccessExclusiveLock that the read holds off, and queue every later read behind it meanwhile."""
    from conftest import create_orders, make_spec

    url = database_url("postgres")
    engine = create_orders(url, rows=10)
    spec = make_spec(url, lock={"timeout_ms": 100, "attempts": 3, "backoff_ms": 10})
    target = Target.of(engine, spec)
    expand(target, spec)
    install_sync(target, spec)
    holder = holding_a_lock(sa.create_engine(url, poolclass=sa.pool.NullPool))
    try:
        report = install_sync(target, spec)
    finally:
        holder.rollback()
        holder.close()
    assert report.lock_timeouts == 0, report
    with engine.begin() as conn:  # the replaced trigger still keeps the pair in step
        conn.execute(sa.text("UPDATE orders SET amount = 1.25 WHERE id = 3"))
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 3")).scalar() == 125


def test_ddl_releases_its_locks_before_the_wal_flush_and_is_flushed_after(database_url: Callable[[str], str]) -> None:
    """PostgreSQL: the DDL's transaction commits without waiting for the WAL flush (the table lock
    goes sooner), then run_ddl waits for the flush, and the pooled session is left as it was."""
    from conftest import make_spec

    url = database_url("postgres")
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    probe = (
        "CREATE TABLE probe AS SELECT current_setting('synchronous_commit') AS during, "
        "pg_current_wal_insert_lsn() AS lsn"
    )
    run_ddl(engine, [probe], make_spec(url).lock, table="probe")
    with engine.connect() as conn:
        flushed = conn.execute(sa.text("SELECT pg_current_wal_flush_lsn()")).scalar()
        during, lsn = conn.execute(sa.text("SELECT during, lsn FROM probe")).one()
        after = conn.execute(sa.text("SHOW synchronous_commit")).scalar()
    assert during == "off"
    assert after == "on"
    # the commit record follows everything the transaction wrote: the flush reached past it
    assert _lsn(flushed) > _lsn(lsn)


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)
