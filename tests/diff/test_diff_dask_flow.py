"""The validate flow under Prefect's harness with ``validation.distributed.mode: dask`` on a real
Dask cluster (a scheduler and two worker processes): the checksum gate fails on planted
differences and passes on equal tables, and the run's live progress artifact ends with the
segments, differences and rows the control store and the tables hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dask_cluster import DaskCluster, dask_cluster
from prefect.artifacts import Artifact
from prefect_stack import free_port

from shiftover.control import schema
from shiftover.control.store import open_store
from shiftover.errors import SpecError
from shiftover.flows.validate import validate
from shiftover.phases import Phase
from shiftover.story import artifact_key

from .conftest import ORDERS, break_target, bring_to_backfilled, spec_dict, write_spec
from .test_diff_dask import plain_segments

pytestmark = pytest.mark.flows


@pytest.fixture
def cluster(dask_home: Path) -> Iterator[DaskCluster]:
    with dask_cluster(dask_home) as running:
        yield running


def _prepared(
    orders_urls: tuple[str, str], tmp_path: Path, control_url: str, name: str, scheduler: str
) -> tuple[str, Any]:
    distributed = {"workers": 2, "mode": "dask", "scheduler": scheduler, "lease_ttl_seconds": 10}
    data = spec_dict(
        *orders_urls,
        name=name,
        validation={"repair": False, "distributed": distributed},
        gates={"validate": ["checksum"]},
    )
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register(name, data)
    bring_to_backfilled(store, name)
    return spec_path, store


def _progress(name: str) -> tuple[float, str]:
    progress: Any = Artifact.get(artifact_key("diff", name, "progress"))  # sync: not a coroutine
    assert progress is not None
    return float(progress.data), progress.description or ""


def test_the_gate_fails_on_planted_differences_and_the_progress_artifact_says_so(  # type: ignore[no-untyped-def]
    prefect_harness, orders_urls, tmp_path, pg_database: Callable[[], str], cluster: DaskCluster
) -> None:
    control_url = pg_database()
    spec_path, store = _prepared(orders_urls, tmp_path, control_url, "orders-dask", cluster.address)
    expected = break_target(orders_urls[1])

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    assert store.phase("orders-dask") == Phase.BACKFILLED
    table: Any = Artifact.get(artifact_key("orders-dask", "validate", "checksum"))
    assert table is not None and "6 differing key(s): 2 missing, 1 extra, 3 changed" in (table.description or "")
    segments, differing, differences = plain_segments(control_url, "orders-dask")
    assert differences == len(expected) and segments >= 4  # 2 workers x 2 segments each
    percent, description = _progress("orders-dask")
    assert percent == 100.0
    assert f"{segments}/{segments} segments done, 0 pending, {differing} differing ({len(expected)} differences)" in (
        description
    ), description
    extra = sum(1 for kind in expected.values() if kind == "extra")
    missing = sum(1 for kind in expected.values() if kind == "missing")
    assert f"source {ORDERS:,}, target {ORDERS - missing + extra:,}" in description, description
    assert "by holder: dask-" in description and "-dw" in description  # the loops' holder ids, Dask worker named


def test_the_gate_passes_on_equal_tables(  # type: ignore[no-untyped-def]
    prefect_harness, orders_urls, tmp_path, pg_database: Callable[[], str], cluster: DaskCluster
) -> None:
    control_url = pg_database()
    spec_path, store = _prepared(orders_urls, tmp_path, control_url, "orders-dask-ok", cluster.address)

    result = validate(spec_path, control_url)

    assert result["phase"] == "validated" and store.phase("orders-dask-ok") == Phase.VALIDATED
    segments, differing, differences = plain_segments(control_url, "orders-dask-ok")
    assert (differing, differences) == (0, 0)
    percent, description = _progress("orders-dask-ok")
    assert percent == 100.0
    assert f"{segments}/{segments} segments done, 0 pending, 0 differing (0 differences)" in description
    assert f"source {ORDERS:,}, target {ORDERS:,}" in description, description


def test_a_silent_scheduler_fails_the_flow_naming_the_field_before_the_diff(  # type: ignore[no-untyped-def]
    prefect_harness, orders_urls, tmp_path, pg_database: Callable[[], str], dask_home: Path
) -> None:
    control_url = pg_database()
    spec_path, store = _prepared(orders_urls, tmp_path, control_url, "orders-silent", f"tcp://127.0.0.1:{free_port()}")

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SpecError) and error.field == "validation.distributed.scheduler", error
    assert "no Dask scheduler answered" in str(error)
    assert store.phase("orders-silent") == Phase.BACKFILLED
    with store.engine.connect() as conn:  # nothing planned
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.diff_segments)).scalar_one() == 0
