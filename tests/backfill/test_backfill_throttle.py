"""Throttle: the rows/s cap holds, pause writes nothing, the lag probe holds copying back,
and run-time settings come from the flag store."""

from __future__ import annotations

import time

import pytest

from shiftover.backfill import backfill_status, run_backfill, set_throttle
from shiftover.backfill.throttle import Throttle
from shiftover.spec import BackfillSpec

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql, start_backfill


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_cap_paces_chunks() -> None:
    clock = FakeClock()
    throttle = Throttle(BackfillSpec(max_rows_per_second=1000), clock=clock, sleep=clock.sleep)
    for _ in range(4):
        throttle.acquire(500)
    assert clock.now == pytest.approx(1.5)  # 2000 rows at 1000 rows/s: the first chunk starts at once


def test_chunk_size_steers_toward_target_time() -> None:
    throttle = Throttle(BackfillSpec(chunk_rows=10_000, target_chunk_seconds=1.0))
    throttle.record(10_000, 0.25)  # 4x too fast: grows, at most doubling
    assert throttle.chunk_rows() == 20_000
    throttle.record(20_000, 4.0)  # 4x too slow: shrinks, at most halving
    assert throttle.chunk_rows() == 10_000
    throttle.record(10_000, 1.25)
    assert throttle.chunk_rows() == 8_000


def test_flag_overrides_spec(control_store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    throttle = Throttle(
        BackfillSpec(chunk_rows=1000),
        store_engine=control_store.engine,
        migration="m",
        clock=clock,
        sleep=clock.sleep,
        refresh_seconds=1.0,
    )
    assert throttle.settings().max_rows_per_second is None
    set_throttle(control_store.engine, "m", max_rows_per_second=50, chunk_rows=700)
    assert throttle.chunk_rows() == 1000  # cached until refresh_seconds pass
    clock.now += 1.0
    assert throttle.chunk_rows() == 700 and throttle.settings().max_rows_per_second == 50
    set_throttle(control_store.engine, "m", max_rows_per_second=0)
    clock.now += 1.0
    assert throttle.settings().max_rows_per_second is None  # 0 removes the cap
    with pytest.raises(ValueError):
        set_throttle(control_store.engine, "m", chunk_rows=1)


class TimedThrottle(Throttle):
    """Records when each chunk finished, to measure the steady rate without start-up costs."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.finished: list[tuple[float, int]] = []

    def record(self, rows: int, seconds: float) -> None:
        self.finished.append((time.monotonic(), rows))
        super().record(rows, seconds)


def test_cap_holds_within_20_percent(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 6000)
    run_sql(target, ITEMS_DDL)
    cap = 3000
    migration = make_migration(source, target, chunk_rows=150, concurrency=2, max_rows_per_second=cap)
    throttle = TimedThrottle(migration.spec.backfill, store_engine=migration.store.engine, migration=migration.name)
    summary = run_backfill(migration, throttle=throttle)
    assert summary.complete and summary.rows_copied == 6000
    (first, _), (last, _) = throttle.finished[0], throttle.finished[-1]
    rate = sum(rows for _, rows in throttle.finished[1:]) / (last - first)
    assert 0.8 * cap <= rate <= 1.2 * cap, rate


def test_paused_writes_nothing_until_resumed(pg_database, make_migration, control_store) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 3000)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target, chunk_rows=500, concurrency=2)
    set_throttle(control_store.engine, migration.name, paused=True)
    thread, result = start_backfill(migration)
    time.sleep(1.0)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
    assert backfill_status(control_store.engine, migration.name).rows_copied == 0
    set_throttle(control_store.engine, migration.name, paused=False)
    thread.join(timeout=30)
    assert result["summary"].complete
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 3000


def test_lag_probe_holds_copying(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 2000)
    run_sql(target, ITEMS_DDL)
    run_sql(source, "CREATE TABLE lag (seconds float)", "INSERT INTO lag VALUES (30)")
    migration = make_migration(source, target, chunk_rows=500, lag_query="SELECT seconds FROM lag", lag_threshold=5)
    thread, result = start_backfill(migration)
    time.sleep(1.0)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
    run_sql(source, "UPDATE lag SET seconds = 1")
    thread.join(timeout=30)
    assert result["summary"].complete and rows_of(target, "SELECT count(*) FROM items")[0][0] == 2000
