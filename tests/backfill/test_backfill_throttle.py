"""Throttle: the rows/s cap holds, pause writes nothing, the lag probe holds copying back,
and run-time settings come from the flag store."""

from __future__ import annotations

import time

import pytest

from shiftover.backfill import backfill_status, make_throttle, run_backfill, set_throttle
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
    """Records when the run first asked for rows and when each chunk was let through the cap."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.first_ask = float("inf")
        self.let_through: list[tuple[float, int]] = []

    def acquire(self, rows: int) -> None:
        self.first_ask = min(self.first_ask, time.monotonic())
        super().acquire(rows)
        self.let_through.append((time.monotonic(), rows))


def test_cap_is_never_exceeded(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """However loaded the machine, by any moment no more rows have started than the cap allows
    since the first ask (plus the chunk in hand); a slow machine only copies slower. How close
    the run comes to the cap is printed, not asserted."""
    source, target = pg_database(), pg_database()
    fill_items(source, 6000)
    run_sql(target, ITEMS_DDL)
    cap = 3000
    migration = make_migration(source, target, chunk_rows=150, concurrency=2, max_rows_per_second=cap)
    throttle = TimedThrottle(migration.spec.backfill, store_engine=migration.store.engine, migration=migration.name)
    summary = run_backfill(migration, throttle=throttle)
    assert summary.complete and summary.rows_copied == 6000
    chunk = max(rows for _, rows in throttle.let_through)
    for at, _ in throttle.let_through:
        started = sum(rows for when, rows in throttle.let_through if when <= at)
        assert started <= cap * (at - throttle.first_ask + 0.001) + chunk, (started, at - throttle.first_ask)
    last = max(when for when, _ in throttle.let_through)
    print(f"{sum(r for _, r in throttle.let_through) / (last - throttle.first_ask):,.0f} rows/s under a cap of {cap:,}")


def test_paused_writes_nothing_until_resumed(pg_database, make_migration, control_store) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 3000)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target, chunk_rows=500, concurrency=2)
    set_throttle(control_store.engine, migration.name, paused=True)
    throttle = make_throttle(migration, refresh_seconds=0.1)
    thread, result = start_backfill(migration, throttle)
    assert throttle.holding.wait(timeout=30), "the backfill never held for the pause"
    assert throttle.held_for == "paused"
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
    assert backfill_status(control_store.engine, migration.name).rows_copied == 0
    set_throttle(control_store.engine, migration.name, paused=False)
    thread.join(timeout=60)
    assert result["summary"].complete
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 3000
    assert not throttle.holding.is_set()
    held = [
        (e["action"], e["detail"]) for e in control_store.audit_entries(migration.name) if "backfill_" in e["action"]
    ]
    assert held == [("backfill_held", {"reason": "paused"}), ("backfill_resumed", {})]


def test_lag_probe_holds_copying(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    source, target = pg_database(), pg_database()
    fill_items(source, 2000)
    run_sql(target, ITEMS_DDL)
    run_sql(source, "CREATE TABLE lag (seconds float)", "INSERT INTO lag VALUES (30)")
    migration = make_migration(source, target, chunk_rows=500, lag_query="SELECT seconds FROM lag", lag_threshold=5)
    throttle = make_throttle(migration, refresh_seconds=0.1)
    thread, result = start_backfill(migration, throttle)
    assert throttle.holding.wait(timeout=30), "the backfill never held for the lag"
    assert throttle.held_for == "lagging"
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
    run_sql(source, "UPDATE lag SET seconds = 1")
    thread.join(timeout=60)
    assert result["summary"].complete and rows_of(target, "SELECT count(*) FROM items")[0][0] == 2000


def test_nice_ratio_rests_after_each_chunk_and_is_retuned_by_the_flag(control_store) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    throttle = Throttle(
        BackfillSpec(nice_ratio=0.5), store_engine=control_store.engine, migration="m", clock=clock, sleep=clock.sleep
    )
    throttle.rest_after(2.0)
    throttle.rest_after(0.0)  # a chunk that took no time rests none
    assert clock.slept == [1.0]
    set_throttle(control_store.engine, "m", nice_ratio=3)
    clock.now += 1.0
    throttle.rest_after(0.5)
    set_throttle(control_store.engine, "m", nice_ratio=0)
    clock.now += 1.0
    throttle.rest_after(2.0)  # 0 removes the rest
    assert clock.slept == [1.0, 1.5]
    for wrong in (-0.1, 101):
        with pytest.raises(ValueError, match="nice_ratio"):
            set_throttle(control_store.engine, "m", nice_ratio=wrong)


class RestingThrottle(Throttle):
    """Records each chunk's time as the copy loop reports it, and each rest actually slept."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs, sleep=self._sleep)
        self.chunks: list[float] = []
        self.rests: list[float] = []

    def record(self, rows: int, seconds: float) -> None:
        self.chunks.append(seconds)
        super().record(rows, seconds)

    def _sleep(self, seconds: float) -> None:
        self.rests.append(seconds)
        time.sleep(seconds)


def test_nice_ratio_paces_a_real_backfill(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """One segment, nice ratio 1: a rest after every chunk as long as the chunk, so the run lasts at
    least twice the chunks' own time; every row arrives."""
    source, target = pg_database(), pg_database()
    fill_items(source, 4000)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target, chunk_rows=500, concurrency=1, nice_ratio=1.0)
    throttle = RestingThrottle(migration.spec.backfill, store_engine=migration.store.engine, migration=migration.name)
    began = time.monotonic()
    summary = run_backfill(migration, throttle=throttle)
    took = time.monotonic() - began
    assert summary.complete and summary.rows_copied == 4000
    every = "SELECT count(*), sum(id) FROM items"
    assert rows_of(target, every) == rows_of(source, every)
    assert len(throttle.chunks) >= 8  # 8 of 500 rows, and the step that finds the end
    assert throttle.rests == pytest.approx(throttle.chunks)
    assert took >= 2 * sum(throttle.chunks)
