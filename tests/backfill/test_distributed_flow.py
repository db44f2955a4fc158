"""The distributed backfill under Prefect's test harness: the backfill flow with ``distributed``
(worker processes over a PostgreSQL control store) and the ``backfill-worker`` flow."""

from __future__ import annotations

import json

import pytest

from shiftover.backfill import backfill_status
from shiftover.backfill.workers import plan_distributed
from shiftover.control.store import open_store
from shiftover.migration import load_migration
from shiftover.phases import Phase

from .conftest import ITEMS_DDL, fill_items, rows_of, run_sql

pytestmark = pytest.mark.flows


def _setup(pg_database, tmp_path, name: str, rows: int):  # type: ignore[no-untyped-def]
    source, target, store_url = pg_database(), pg_database(), pg_database()
    fill_items(source, rows)
    run_sql(target, ITEMS_DDL)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {
                "name": name,
                "source": {"url": source, "table": "items"},
                "target": {"url": target, "table": "items"},
                "key": "id",
                "backfill": {"chunk_rows": 1000},
            }
        )
    )
    store = open_store(store_url)
    store.register(name, {})
    return source, target, str(path), store_url, store


def test_backfill_flow_distributed_over_worker_processes(prefect_harness, pg_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prefect.artifacts import Artifact

    from shiftover.flows.backfill import backfill
    from shiftover.story import artifact_key

    source, target, spec, url, store = _setup(pg_database, tmp_path, "dist", 30_000)
    store.transition("dist", Phase.DUAL_WRITING, "test")
    summary = backfill(spec, url, distributed=2)

    assert summary["complete"] and summary["rows_copied"] == 30_000 and summary["segments"] == 4
    assert store.phase("dist") == Phase.BACKFILLED
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
    status = backfill_status(store.engine, "dist")
    assert status.complete and status.rows_copied == 30_000
    progress = Artifact.get(artifact_key("backfill", "dist", "progress"))
    assert progress is not None and float(progress.data) == 100.0


def test_backfill_worker_flow_copies_a_planned_backfill(prefect_harness, pg_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.backfill_worker import backfill_worker

    source, target, spec, url, store = _setup(pg_database, tmp_path, "wk", 10_000)
    plan_distributed(load_migration(spec, url), 3)
    report = backfill_worker(spec, url, worker_id="w1", lease_ttl_seconds=10)
    assert report["worker"] == "w1" and report["rows_read"] == 10_000 and len(report["segments"]) == 3
    assert backfill_status(store.engine, "wk").complete
    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
