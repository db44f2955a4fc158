"""Shadow reads (Scientist semantics), read routing, and the traffic gates reading their counters."""

from __future__ import annotations

import sqlalchemy as sa

from shiftover.checks.gate import GateContext
from shiftover.checks.traffic import lag, reconcile_drained, secondary_error_rate, shadow_mismatch
from shiftover.control.store import utcnow
from shiftover.flags.routing import WriteMode, set_reads_percent, set_shadow
from shiftover.metrics import mismatch_rate, shadow_errors
from shiftover.migration import Migration
from shiftover.spec import GateSpec, parse_spec

from .conftest import Pair, orders_spec, unreachable


def migration_of(pair: Pair, **spec_extra: object) -> Migration:
    urls = (pair.old.url.render_as_string(False), pair.new.url.render_as_string(False))
    spec = parse_spec(orders_spec(pair.name, *urls, **spec_extra))
    return Migration(spec=spec, mapping=pair.mapping, source=pair.old, target=pair.new, store=pair.store)


def corrupt_new(pair: Pair, order_id: int) -> None:
    with pair.new.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'WRONG' WHERE id = :id"), {"id": order_id})


def test_shadow_read_returns_old_and_records_mismatch(pg_pair: Pair) -> None:
    since = utcnow()
    migration = migration_of(pg_pair)
    pg_pair.store.register(pg_pair.name, {})
    set_shadow(pg_pair.store.engine, pg_pair.name, True, "test")
    pg_pair.flags.refresh()
    corrupt_new(pg_pair, 3)
    with pg_pair.writer() as writer:
        assert writer.read((3,))["status"] != "WRONG"  # type: ignore[index]
        for k in range(4, 14):
            assert writer.read((k,)) is not None
        writer.read((99_999,))  # absent on both sides: equal
        writer.flush()
    assert mismatch_rate(pg_pair.store.engine, pg_pair.name, since) == (12, 1)
    with pg_pair.store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT key_json, columns, old_value, new_value FROM so_shadow_mismatches")).one()
    assert row.key_json == "[3]" and "status" in row.columns and "WRONG" in row.new_value
    failed = shadow_mismatch(GateContext(migration, "canary"), GateSpec(name="shadow_mismatch", threshold=0.0))
    assert not failed.passed and failed.metrics["mismatches"] == 1 and failed.rows[0]["key"] == "[3]"
    assert failed.markdown.startswith("### Shadow-read mismatches") and "| [3] | status |" in failed.markdown
    assert shadow_mismatch(GateContext(migration, "canary"), GateSpec(name="shadow_mismatch", threshold=0.1)).passed


def test_shadow_reads_that_cannot_reach_the_new_store_fail_the_gate(pg_pair: Pair) -> None:
    """Every shadow comparison failed (the new store refused the connection): no read was compared,
    so there is no mismatch, but the gate must not pass as if there were nothing to disagree about."""
    migration = migration_of(pg_pair)
    pg_pair.store.register(pg_pair.name, {})
    set_shadow(pg_pair.store.engine, pg_pair.name, True, "test")
    pg_pair.flags.refresh()
    since = utcnow()
    with pg_pair.writer(new=unreachable(pg_pair.new)) as writer:
        for k in range(1, 6):
            assert writer.read((k,)) is not None  # served from the old store all the same
        writer.flush()
    assert mismatch_rate(pg_pair.store.engine, pg_pair.name, since) == (0, 0)
    assert shadow_errors(pg_pair.store.engine, pg_pair.name, since) == 5
    gate = GateSpec(name="shadow_mismatch", threshold=0.5)
    failed = shadow_mismatch(GateContext(migration, "canary"), gate)
    assert not failed.passed and failed.metrics["errors"] == 5
    assert "5 could not be compared" in failed.summary


def test_reads_move_to_new_by_percentage_with_old_as_shadow(pg_pair: Pair) -> None:
    corrupt_new(pg_pair, 5)
    set_reads_percent(pg_pair.store.engine, pg_pair.name, 100, "test")
    set_shadow(pg_pair.store.engine, pg_pair.name, True, "test")
    pg_pair.flags.refresh()
    since = utcnow()
    with pg_pair.writer() as writer:
        assert writer.read((5,))["status"] == "WRONG"  # type: ignore[index]
        writer.flush()
    assert mismatch_rate(pg_pair.store.engine, pg_pair.name, since) == (1, 1)
    set_reads_percent(pg_pair.store.engine, pg_pair.name, 50, "test")
    set_shadow(pg_pair.store.engine, pg_pair.name, False, "test")
    pg_pair.flags.refresh()
    with pg_pair.writer() as writer:
        with pg_pair.new.begin() as conn:
            conn.execute(sa.text("UPDATE orders SET note = 'from-new'"))
        from_new = sum(writer.read((k,))["note"] == "from-new" for k in range(1, 51))  # type: ignore[index]
    assert 12 < from_new < 38  # about half, bucketed by key


def test_reconcile_drained_and_error_rate_gates(pg_pair: Pair) -> None:
    migration = migration_of(pg_pair)
    pg_pair.store.register(pg_pair.name, {})
    assert reconcile_drained(GateContext(migration, "canary"), GateSpec(name="reconcile_drained")).passed
    pg_pair.set_mode(WriteMode.DUAL_OLD_PRIMARY)
    with pg_pair.writer(new=unreachable(pg_pair.new)) as w:
        w.update((1,), {"note": "x"})
        w.update((2,), {"note": "y"})
    drained = reconcile_drained(GateContext(migration, "canary"), GateSpec(name="reconcile_drained"))
    assert not drained.passed and drained.metrics["pending"] == 2
    errors = secondary_error_rate(GateContext(migration, "canary"), GateSpec(name="error_rate", threshold=0.5))
    assert not errors.passed and errors.metrics["secondary_errors"] == 2


def test_lag_gate_runs_the_declared_query(pg_pair: Pair) -> None:
    slow = migration_of(pg_pair, backfill={"lag_query": "SELECT count(*) FROM orders", "lag_threshold": 10})
    result = lag(GateContext(slow, "canary"), GateSpec(name="lag"))
    assert not result.passed and result.metrics["lag"] == 50
    assert lag(GateContext(slow, "canary"), GateSpec(name="lag", threshold=100)).passed
    assert lag(GateContext(migration_of(pg_pair), "canary"), GateSpec(name="lag")).passed


def test_shadow_sampling_and_mismatch_cap(pg_pair: Pair) -> None:
    set_shadow(pg_pair.store.engine, pg_pair.name, True, "test")
    pg_pair.flags.refresh()
    with pg_pair.new.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET note = 'drift'"))  # every row now differs
    since = utcnow()
    with pg_pair.writer(shadow_sample=0.5, max_mismatch_rows=3, metrics_interval=600) as writer:
        for k in range(1, 51):
            writer.read((k,))
            writer.read((k,))
        writer.flush()
    reads, mismatches = mismatch_rate(pg_pair.store.engine, pg_pair.name, since)
    assert 30 < reads < 70 and mismatches == reads  # about half of 100 reads shadowed, all differ
    with pg_pair.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM so_shadow_mismatches")).scalar() == 3  # capped per flush
