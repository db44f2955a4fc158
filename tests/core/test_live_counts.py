"""Counts taken while the application writes are judged against the writes in flight."""

from __future__ import annotations

import random

from shiftover.checks.live import CountBand


def test_band_is_exact_without_writes() -> None:
    band = CountBand(source_before=100, source_after=100, writes_in_window=0)
    assert band.holds(100) and not band.holds(99) and not band.holds(101)
    assert band.describe() == "source 100 rows (no writes in flight)"


def test_band_widens_by_the_writes_in_flight() -> None:
    band = CountBand(source_before=100, source_after=104, writes_in_window=3)
    assert (band.low, band.high) == (97, 107)
    assert band.holds(97) and band.holds(107) and not band.holds(96) and not band.holds(108)
    assert "3 application writes in flight" in band.describe()


def test_dual_writer_reports_the_writes_that_move_a_count(control_store, sqlite_database) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from shiftover.connect import get_engine
    from shiftover.control.store import utcnow
    from shiftover.demo import create_orders, order_row
    from shiftover.dualwrite import DualWriter
    from shiftover.flags.client import FlagClient
    from shiftover.flags.routing import WriteMode, set_write_mode
    from shiftover.metrics import ROW_COUNT_CHANGES, WRITES, sum_metrics
    from shiftover.preflight import resolve_mapping
    from shiftover.spec import parse_spec

    old, new = sqlite_database(), sqlite_database()
    create_orders(get_engine(old), rows=5)
    create_orders(get_engine(new), rows=0)
    spec = parse_spec(
        {"name": "m", "source": {"url": old, "table": "orders"}, "target": {"url": new, "table": "orders"}, "key": "id"}
    )
    set_write_mode(control_store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "test")
    since = utcnow() - timedelta(seconds=1)
    flags = FlagClient(control_store.engine, prefix="m:")
    with DualWriter(get_engine(old), get_engine(new), resolve_mapping(spec), flags, control_store.engine, "m") as w:
        rng = random.Random(1)
        w.insert(order_row(6, rng))
        w.insert(order_row(7, rng))
        w.update((1,), {"status": "paid"})
        w.update((2,), {"status": "paid"})
        w.delete((3,))
    flags.close()
    sums = sum_metrics(control_store.engine, "m", [WRITES, ROW_COUNT_CHANGES], since)
    assert (sums[WRITES], sums[ROW_COUNT_CHANGES]) == (5, 3)


def _dual_writing_migration(control_store, sqlite_database, rows: int):  # type: ignore[no-untyped-def]
    from shiftover.connect import get_engine
    from shiftover.demo import create_orders
    from shiftover.flags.routing import WriteMode, set_write_mode
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec

    old, new = sqlite_database(), sqlite_database()
    create_orders(get_engine(old), rows=rows)
    create_orders(get_engine(new), rows=0)
    spec = parse_spec(
        {"name": "m", "source": {"url": old, "table": "orders"}, "target": {"url": new, "table": "orders"}, "key": "id"}
    )
    migration = open_migration(spec, str(control_store.engine.url))
    set_write_mode(control_store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "test")
    return migration


def test_counts_under_dual_write_wait_only_until_the_band_holds_the_target(control_store, sqlite_database) -> None:  # type: ignore[no-untyped-def]
    """The reported writes only widen the band: a target inside it is judged at once, a target outside
    it waits for the dual-writers' reports (and is judged the moment they explain it), and one the
    reports never explain waits the whole flush interval."""
    import threading
    import time

    from shiftover.checks.live import METRICS_FLUSH_SECONDS, around_source_counts
    from shiftover.metrics import ROW_COUNT_CHANGES, Recorder

    m = _dual_writing_migration(control_store, sqlite_database, rows=10)

    began = time.monotonic()
    target, band = around_source_counts(m, lambda _source: 10, lambda n: n)
    assert band.holds(target) and band.writes_in_window == 0
    assert time.monotonic() - began < 0.5 * METRICS_FLUSH_SECONDS

    began = time.monotonic()
    target, band = around_source_counts(m, lambda _source: 12, lambda n: n)
    assert not band.holds(target)
    assert time.monotonic() - began >= METRICS_FLUSH_SECONDS

    recorder = Recorder(control_store.engine, "m")
    recorder.count(ROW_COUNT_CHANGES, 2)
    reporting = threading.Timer(0.3, recorder.flush)  # a dual-writer's flush arriving mid-wait
    began = time.monotonic()
    reporting.start()
    target, band = around_source_counts(m, lambda _source: 12, lambda n: n)
    waited = time.monotonic() - began
    reporting.join()
    assert band.holds(target) and band.writes_in_window == 2
    assert 0.3 <= waited < METRICS_FLUSH_SECONDS
