"""The checksum and row-count gates on real PostgreSQL: repair, resume, since, the work bound."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from shiftover.checks.data import checksum_gate, row_count_gate
from shiftover.checks.gate import DiffScope, GateContext
from shiftover.connect import get_engine
from shiftover.control import schema
from shiftover.demo import orders_table
from shiftover.diff import DiffProgress, diff_tables, new_run_id, unfinished_run, validation_status
from shiftover.spec import GateSpec

from .conftest import ORDERS, break_target


def test_row_count_gate_reports_both_counts(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders()
    assert row_count_gate(GateContext(m, "validate"), GateSpec(name="row_count")).passed
    break_target(orders_urls[1])  # -2 +1 rows
    result = row_count_gate(GateContext(m, "validate"), GateSpec(name="row_count"))
    assert not result.passed
    assert result.metrics == {"source_rows": ORDERS, "target_rows": ORDERS - 1, "tolerated": 0, "writes_in_flight": 0}
    assert row_count_gate(GateContext(m, "validate"), GateSpec(name="row_count", threshold=1)).passed


def test_checksum_gate_repairs_differences_and_rechecks(open_orders, orders_urls, control_store) -> None:  # type: ignore[no-untyped-def]
    m = open_orders()
    expected = break_target(orders_urls[1])

    result = checksum_gate(GateContext(m, "validate"), GateSpec(name="checksum"))

    assert result.passed, result.summary
    assert {(int(r["key"]),): r["kind"] for r in result.rows} == expected
    assert all(r["repaired"] for r in result.rows)
    assert result.metrics["remaining"] == 0
    assert diff_tables(m.source, m.target, m.mapping, m.spec.validation).equal
    repairs = control_store.audit_entries(m.name, action="repair")
    assert repairs and repairs[0]["detail"]["upserted"] == 5 and repairs[0]["detail"]["deleted"] == 1
    status = validation_status(control_store.engine, m.name)
    assert (status.failures, status.unrepaired) == (6, 0)


def test_checksum_gate_without_repair_fails_with_the_keys(open_orders, orders_urls, control_store) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"repair": False})
    expected = break_target(orders_urls[1])

    result = checksum_gate(GateContext(m, "validate"), GateSpec(name="checksum"))

    assert not result.passed
    assert "6 differing key(s): 2 missing, 1 extra, 3 changed" in result.summary
    assert {(int(r["key"]),): r["kind"] for r in result.rows} == expected
    # 6 keys in at most 6 segments were narrowed; the others passed their screen
    assert 1 <= result.metrics["segments_differing"] <= 6 < result.metrics["segments"]
    assert f"{result.metrics['segments_differing']} differed and were narrowed to rows" in result.markdown
    assert checksum_gate(
        GateContext(m, "validate"), GateSpec(name="checksum", threshold=6)
    ).passed  # a declared tolerance
    status = validation_status(control_store.engine, m.name)
    assert status.unrepaired == 6 and len(status.sample) == 5


def test_diff_stops_at_max_differences(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"max_differences": 10, "repair": False})
    with m.target.begin() as conn:
        conn.execute(orders_table().delete())

    report = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    result = checksum_gate(GateContext(m, "validate"), GateSpec(name="checksum"))

    assert report.truncated and len(report.differences) == 10
    assert {d.kind for d in report.differences} == {"missing"}
    assert not result.passed and "stopped" in result.summary


class _Crash(Exception):
    pass


class _CrashingProgress(DiffProgress):
    """The crash seam: the process dies while recording the third finished segment."""

    def finish_segment(self, segment, found) -> None:  # type: ignore[no-untyped-def]
        if segment == 2:
            raise _Crash("killed")
        super().finish_segment(segment, found)


def test_a_crashed_diff_resumes_from_its_finished_segments(open_orders, orders_urls, control_store) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"segments": 6, "repair": False})
    expected = break_target(orders_urls[1])
    run_id = new_run_id()
    with pytest.raises(_Crash):
        diff_tables(
            m.source,
            m.target,
            m.mapping,
            m.spec.validation,
            progress=_CrashingProgress(control_store.engine, m.name, run_id),
            workers=1,
        )
    assert unfinished_run(control_store.engine, m.name) == run_id

    resumed = diff_tables(
        m.source, m.target, m.mapping, m.spec.validation, progress=DiffProgress(control_store.engine, m.name, run_id)
    )

    assert resumed.segments == 6 and resumed.segments_resumed == 2
    assert {d.key: d.kind for d in resumed.differences} == expected
    assert unfinished_run(control_store.engine, m.name) is None
    with control_store.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(schema.validation_failures)).scalar()
    assert stored == len(expected)  # each difference recorded once across the crash


def test_since_limits_the_diff_to_recently_updated_rows(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"repair": False})
    t = orders_table()
    since = datetime(2030, 1, 1)
    with m.target.begin() as conn:
        conn.execute(t.update().where(t.c.id == 5).values(status="old-drift"))  # not recent: out of scope
        conn.execute(t.update().where(t.c.id == 6).values(status="recent", updated_at=since + timedelta(hours=1)))
    with m.source.begin() as conn:  # updated in the source only: the target's copy is stale
        conn.execute(t.update().where(t.c.id == 7).values(note="new", updated_at=since + timedelta(hours=2)))

    report = diff_tables(m.source, m.target, m.mapping, m.spec.validation, since=since)
    scoped = checksum_gate(GateContext(m, "validate", DiffScope(since=since)), GateSpec(name="checksum"))

    assert {d.key: (d.kind, d.columns) for d in report.differences} == {
        (6,): ("changed", ("status", "updated_at")),
        (7,): ("changed", ("note", "updated_at")),
    }
    assert scoped.metrics["differences"] == 2
    # a canary step's report says what its rows are: the rows written during the step
    said = f"rows written during this step (since 00:00:00 UTC): {report.source_rows}"
    assert scoped.summary.startswith(said + ";") and scoped.markdown.startswith(f"- {said}")
    print(scoped.summary)


def test_key_scope_compares_only_the_given_keys(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"repair": False})
    break_target(orders_urls[1])
    result = checksum_gate(GateContext(m, "validate", DiffScope(keys=((10,), (11,), (42,)))), GateSpec(name="checksum"))
    assert {r["key"]: r["kind"] for r in result.rows} == {"10": "changed", "42": "missing"}


def test_changed_target_engine_url_is_never_in_the_report(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders(validation={"repair": False})
    break_target(orders_urls[1])
    result = checksum_gate(GateContext(m, "validate"), GateSpec(name="checksum"))
    assert "postgres@" not in result.markdown and get_engine(orders_urls[0]).url.database not in result.markdown


def test_keys_from_the_reconciliation_queue_scope_the_recheck(open_orders, orders_urls, control_store) -> None:  # type: ignore[no-untyped-def]
    from shiftover.checks.data import queued_keys
    from shiftover.control.store import key_to_json, utcnow

    m = open_orders(validation={"repair": False})
    break_target(orders_urls[1])
    now = utcnow()
    with control_store.engine.begin() as conn:
        conn.execute(
            schema.reconcile_queue.insert(),
            [
                {
                    "migration": m.name,
                    "key_json": key_to_json(k),
                    "op": "upsert",
                    "state": "done",
                    "attempts": 1,
                    "enqueued_at": now,
                    "updated_at": now,
                }
                for k in ((250,), (300,), (301,), (250,))
            ],
        )

    keys = queued_keys(m)
    result = checksum_gate(GateContext(m, "validate", DiffScope(keys=keys)), GateSpec(name="checksum"))

    assert sorted(keys) == [(250,), (300,), (301,)]
    assert {r["key"]: r["kind"] for r in result.rows} == {"250": "changed", "300": "missing"}
