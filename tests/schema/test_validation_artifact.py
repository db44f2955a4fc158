"""The validate stage's column checks as a Prefect table artifact, ``<change>-validation``: on a
failure the operator sees the check that failed, the first differing keys and the query."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.schema.columns import Target, install_sync, remove_sync


def test_a_failed_column_check_is_published_with_its_keys(
    prefect_harness: None, sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from shiftover.flows.expand import expand_contract

    url = sqlite_database()
    engine = create_orders(url, rows=120)
    spec = make_spec(url)
    path, control = str(spec_file(tmp_path, spec, "change")), str(control_store.engine.url)
    expand_contract(path, control, auto_approve=True, stop_after="backfill")
    target = Target.of(engine, spec)
    remove_sync(target, spec)  # a row put out of step behind the triggers' back, as a bug would
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 17"))
    install_sync(target, spec)

    state = expand_contract(path, control, auto_approve=True, stop_after="validate", return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["orders-cents-validation"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert artifact.type == "table" and "FAILED" in str(artifact.description)
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(str(artifact.data))
    failed = [r for r in rows if r["mismatches"]]
    assert [(r["mismatches"], r["first keys"]) for r in failed] == [(1, "[17]")]
    assert "SELECT" in failed[0]["query"]
