"""The backfill flow under Prefect's test harness: phases, resume, time budget, artifacts."""

from __future__ import annotations

import json

import pytest

from shiftover.errors import PhaseError
from shiftover.phases import Phase

from .conftest import ITEMS_DDL, control_url, fill_items, rows_of, run_sql, write_items_spec

pytestmark = pytest.mark.flows


def _prepare(pg_database, control_store, tmp_path, name: str, rows: int, **backfill):  # type: ignore[no-untyped-def]
    """``rows`` items in a new source, an empty target, a spec file, and the migration registered (planned)."""
    source, target = pg_database(), pg_database()
    fill_items(source, rows)
    run_sql(target, ITEMS_DDL)
    control_store.register(name, {})
    return source, target, write_items_spec(tmp_path, source, target, name, **backfill), control_url(control_store)


def test_flow_copies_and_moves_phase(prefect_harness, pg_database, control_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prefect.artifacts import Artifact

    from shiftover.flows.backfill import backfill
    from shiftover.story import artifact_key

    source, target, spec, url = _prepare(
        pg_database, control_store, tmp_path, "flow-ok", 5000, chunk_rows=700, concurrency=3
    )

    with pytest.raises(PhaseError):  # planned: dual-writes must be on before the backfill
        backfill(spec, url)
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0

    control_store.transition("flow-ok", Phase.DUAL_WRITING, "test")
    summary = backfill(spec, url)

    assert summary["complete"] and summary["rows_copied"] == 5000 and summary["segments"] > 1
    assert control_store.phase("flow-ok") == Phase.BACKFILLED
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
    table = Artifact.get(artifact_key("backfill", "flow-ok", "segments"))
    assert table is not None and "5,000" in (table.description or "")
    assert json.loads(table.data)[0]["state"] == "done"
    progress = Artifact.get(artifact_key("backfill", "flow-ok", "progress"))
    assert progress is not None and float(progress.data) == 100.0


def test_time_budget_stops_cleanly_and_next_run_resumes(prefect_harness, pg_database, control_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.backfill import backfill

    _, target, spec, url = _prepare(
        pg_database,
        control_store,
        tmp_path,
        "flow-budget",
        6000,
        chunk_rows=200,
        concurrency=2,
        max_rows_per_second=2000,
    )
    control_store.transition("flow-budget", Phase.DUAL_WRITING, "test")

    first = backfill(spec, url, time_budget_seconds=1.0)

    assert first["state"] == "incomplete" and not first["complete"]
    copied = rows_of(target, "SELECT count(*) FROM items")[0][0]
    assert 0 < copied < 6000
    assert control_store.phase("flow-budget") == Phase.BACKFILLING

    second = backfill(spec, url)

    assert second["complete"] and control_store.phase("flow-budget") == Phase.BACKFILLED
    assert second["rows_copied"] <= 6000 - copied + 2 * 200  # resumed, at most a chunk per segment again
    assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 6000


def test_prefect_variable_pauses_a_running_flow(prefect_harness, pg_database, control_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What the UI does: set a variable; the running backfill holds, then resumes when it is cleared."""
    import threading

    from prefect.variables import Variable

    from shiftover.flows.backfill import backfill, throttle_variable_name

    _, target, spec, url = _prepare(
        pg_database, control_store, tmp_path, "flow-ui", 3000, chunk_rows=300, concurrency=2
    )
    control_store.transition("flow-ui", Phase.DUAL_WRITING, "test")
    name = throttle_variable_name("flow-ui")
    Variable.set(name, {"paused": True}, overwrite=True)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=backfill(spec, url)))
    thread.start()
    try:
        held = _wait_for_audit(control_store, "flow-ui", "backfill_held", thread)
        assert held["detail"] == {"reason": "paused"}
        assert rows_of(target, "SELECT count(*) FROM items")[0][0] == 0
        Variable.set(name, {"paused": False}, overwrite=True)
        thread.join(timeout=120)
    finally:
        Variable.unset(name)
    assert result["summary"]["complete"] and rows_of(target, "SELECT count(*) FROM items")[0][0] == 3000
    assert [e["action"] for e in control_store.audit_entries("flow-ui") if e["action"].startswith("backfill_")] == [
        "backfill_held",
        "backfill_resumed",
    ]


def _wait_for_audit(control_store, migration: str, action: str, thread, timeout: float = 60.0) -> dict:  # type: ignore[no-untyped-def]
    """The first ``action`` entry of ``migration``'s audit log, polled while ``thread`` runs."""
    import time

    deadline = time.monotonic() + timeout
    while not (entries := control_store.audit_entries(migration, action=action)):
        assert thread.is_alive(), f"the run ended with no {action!r} entry"
        assert time.monotonic() < deadline, f"no {action!r} entry within {timeout:g} s"
        time.sleep(0.05)
    return entries[0]
