"""The flag client: cached reads, background refresh, fallback to last known values."""

from __future__ import annotations

import logging
import time
import timeit

import pytest
import sqlalchemy as sa

from shiftover.control.store import ControlStore
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import (
    Routing,
    WriteMode,
    set_kill_switch,
    set_reads_percent,
    set_shadow,
    set_write_mode,
)
from shiftover.flags.store import set_flag


def test_never_reached_store_serves_the_safe_default(caplog: pytest.LogCaptureFixture) -> None:
    dead = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    with caplog.at_level(logging.WARNING):
        client = FlagClient(dead, ttl=0.05)
    try:
        assert client.routing("orders") == Routing(migration="orders")
        assert client.routing("orders").writes == WriteMode.OLD_ONLY
        assert client.get("anything", "dflt") == "dflt"
        status = client.status()
        assert not status.reachable and not status.ever_reached and status.last_error
        assert "safe defaults" in caplog.text
    finally:
        client.close()


def test_flip_reaches_a_running_client(control_store: ControlStore) -> None:
    """The background refresh picks a flip up on its own (a generous deadline: how fast is the benchmark's claim)."""
    client = FlagClient(control_store.engine, ttl=0.1)
    try:
        assert client.routing("m").writes == WriteMode.OLD_ONLY
        set_write_mode(control_store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "test")
        set_reads_percent(control_store.engine, "m", 25, "test")
        set_shadow(control_store.engine, "m", True, "test")
        deadline = time.monotonic() + 30
        while client.routing("m").writes != WriteMode.DUAL_OLD_PRIMARY and time.monotonic() < deadline:
            time.sleep(0.02)
        routing = client.routing("m")
        assert (routing.writes, routing.reads_percent, routing.shadow) == (WriteMode.DUAL_OLD_PRIMARY, 25.0, True)
    finally:
        client.close()


def test_store_outage_keeps_last_known_values(control_store: ControlStore, caplog: pytest.LogCaptureFixture) -> None:
    set_write_mode(control_store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "test")
    client = FlagClient(control_store.engine, start=False)
    assert client.routing("m").writes == WriteMode.DUAL_OLD_PRIMARY
    with control_store.engine.begin() as conn:  # the store "disappears": its table is gone
        conn.execute(sa.text("ALTER TABLE so_flags RENAME TO so_flags_away"))
    with caplog.at_level(logging.WARNING):
        assert client.refresh() is False
    assert client.routing("m").writes == WriteMode.DUAL_OLD_PRIMARY
    status = client.status()
    assert status.ever_reached and not status.reachable and "so_flags" in (status.last_error or "")
    assert "last known values" in caplog.text
    with control_store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE so_flags_away RENAME TO so_flags"))
    assert client.refresh() and client.status().reachable


def test_kill_switch_from_store_and_local(control_store: ControlStore) -> None:
    eng = control_store.engine
    set_write_mode(eng, "m", WriteMode.DUAL_OLD_PRIMARY, "test")
    set_reads_percent(eng, "m", 50, "test")
    client = FlagClient(eng, start=False)
    client.kill()
    assert client.routing("m").writes == WriteMode.OLD_ONLY and client.routing("m").reads_percent == 0
    client.kill(False)
    assert client.routing("m").reads_percent == 50
    set_kill_switch(eng, "m", True, "ops", reason="bad canary")
    client.refresh()
    killed = client.routing("m")
    assert killed.killed and killed.writes == WriteMode.OLD_ONLY and not killed.reads_new((1,))
    set_write_mode(eng, "m", WriteMode.DUAL_NEW_PRIMARY, "test")
    client.refresh()
    assert client.routing("m").writes == WriteMode.DUAL_NEW_PRIMARY  # only rollback moves writes back then


def test_percentage_flags_and_cached_reads(control_store: ControlStore) -> None:
    """Shares and cached answers; the read cost is printed here and held to its target (< 5 us) by
    bench/dualwrite.py, not asserted on a shared machine."""
    set_flag(control_store.engine, "feature:x", 30, "test")
    client = FlagClient(control_store.engine, start=False)
    share = sum(client.is_enabled_for("feature:x", k) for k in range(10_000)) / 10_000
    assert 0.27 < share < 0.33
    assert client.is_enabled_for("feature:x", 5, percent=100)
    assert client.get("feature:x") == 30
    per_call = min(timeit.repeat(lambda: client.get("feature:x"), number=10_000, repeat=3)) / 10_000
    per_routing = min(timeit.repeat(lambda: client.routing("feature"), number=10_000, repeat=3)) / 10_000
    print(f"cached flag read {per_call * 1e6:.2f} µs, cached routing read {per_routing * 1e6:.2f} µs")
