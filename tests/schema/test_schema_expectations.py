"""The expand/contract spec's Great Expectations, run by the validate stage on the changed table:
a passing suite lets the run reach validated; a failing one stops it at validate naming the
expectation and what it observed (phase still backfilled), recorded in the audit log and, in a
flow run, as a table artifact; a bad expectation is refused by its spec field before any DDL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import ENGINES, create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target
from shiftover.schema.errors import ExpectationsFailedError

ROWS = 300  # amount_cents of row i is 37 * i (see conftest.amount_of), row 7's is NULL


def cents_over(limit: int) -> int:
    """Rows whose amount_cents will exceed ``limit``, computed in Python from the rows created."""
    return sum(1 for i in range(1, ROWS + 1) if i != 7 and i * 37 > limit)


def run(tmp_path: Path, control_store: ControlStore, url: str, expectations: list[dict[str, Any]]) -> dict[str, Any]:
    spec = make_spec(url, expectations=expectations)
    path = str(spec_file(tmp_path, spec, "change"))
    return run_schema_change(path, str(control_store.engine.url), RunOptions(auto_approve=True), stop_after="validate")


def audited(control_store: ControlStore) -> list[dict[str, Any]]:
    return [e["detail"] for e in control_store.audit_entries("orders-cents", action="schema_expectations")]


@pytest.mark.parametrize("kind", ENGINES)
def test_a_passing_suite_on_the_new_columns_reaches_validated(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    create_orders(url, rows=ROWS)
    report = run(
        tmp_path,
        control_store,
        url,
        [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "amount_cents", "min_value": 0, "max_value": 11_100},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "channel"}},
        ],
    )
    assert report["ran"] == ["expand", "sync", "backfill", "validate"]
    assert read_state(control_store, "orders-cents").phase is Phase.VALIDATED
    [entry] = audited(control_store)
    assert entry["passed"] is True and [o["success"] for o in entry["outcomes"]] == [True, True]
    assert entry["summary"] == "2/2 expectations met"


@pytest.mark.parametrize("kind", ENGINES)
def test_a_failing_expectation_stops_the_run_at_validate(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=ROWS)
    limit = 11_099  # row 300 (11100 cents) is above it
    with pytest.raises(ExpectationsFailedError) as caught:
        run(
            tmp_path,
            control_store,
            url,
            [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "channel"}},
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "amount_cents", "max_value": limit},
                },
            ],
        )
    with engine.connect() as conn:  # independent of GX: the backfilled values, read back
        over = conn.execute(sa.text("SELECT count(*) FROM orders WHERE amount_cents > :m"), {"m": limit}).scalar()
    assert over == cents_over(limit) == 1
    message = str(caught.value)
    assert "1 expectation(s) failed" in message
    assert f"expect_column_values_to_be_between(column=amount_cents, max_value={limit}): observed {over} (" in message
    assert "11100" in message and "expect_column_values_to_not_be_null" not in message
    assert read_state(control_store, "orders-cents").phase is Phase.BACKFILLED
    [entry] = audited(control_store)
    assert entry["passed"] is False
    assert [(o["expectation"], o["success"], o["observed"]) for o in entry["outcomes"]] == [
        ("expect_column_values_to_not_be_null", True, "0"),
        ("expect_column_values_to_be_between", False, str(over)),
    ]


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize(
    ("expectation", "field"),
    [
        (
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount_dollars"}},
            "expectations.0.kwargs.column",
        ),
        ({"type": "expect_the_moon", "kwargs": {"column": "amount_cents"}}, "expectations.0.type"),
    ],
)
def test_a_bad_expectation_is_refused_before_any_ddl(
    kind: str,
    expectation: dict[str, Any],
    field: str,
    database_url: Callable[[str], str],
    control_store: ControlStore,
    tmp_path: Path,
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=ROWS)
    with pytest.raises(SpecError) as caught:
        run(tmp_path, control_store, url, [expectation])
    assert caught.value.field == field
    assert Target.of(engine, make_spec(url)).column_names() == ["id", "amount", "note"]  # nothing written
    assert not control_store.has_migration("orders-cents")  # a refused first run leaves no migration


def test_a_misshapen_expectation_is_refused_at_load() -> None:
    with pytest.raises(SpecError) as caught:
        make_spec("sqlite:///unused.db", expectations=[{"type": "ExpectColumnToExist", "kwargs": {"column": "id"}}])
    assert caught.value.field == "expectations.0.type"
    with pytest.raises(SpecError) as caught:
        make_spec(
            "sqlite:///unused.db",
            expectations=[{"type": "expect_column_to_exist", "kwargs": {"column": "id"}, "stages": ["validate"]}],
        )
    assert caught.value.field == "expectations.0.stages"


def test_the_flow_publishes_the_outcome_as_an_artifact(
    prefect_harness: None, sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from shiftover.flows.expand import expand_contract
    from shiftover.story import artifact_key

    url = sqlite_database()
    create_orders(url, rows=ROWS)
    limit = 11_099
    spec = make_spec(
        url,
        expectations=[
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount_cents", "max_value": limit}}
        ],
    )
    path = str(spec_file(tmp_path, spec, "change"))
    state = expand_contract(
        path, str(control_store.engine.url), auto_approve=True, stop_after="validate", return_state=True
    )
    assert state.is_failed()
    key = artifact_key(spec.name, "expectations")
    assert key == "orders-cents-expectations"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    [artifact] = artifacts
    assert artifact.type == "table"
    assert "FAILED: expect_column_values_to_be_between" in str(artifact.description)
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(str(artifact.data))
    assert [(r["expectation"], r["success"], r["observed"]) for r in rows] == [
        ("expect_column_values_to_be_between", False, str(cents_over(limit)))
    ]
    assert read_state(control_store, spec.name).phase is Phase.BACKFILLED


def test_a_failed_warning_is_reported_and_does_not_block(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = sqlite_database()
    create_orders(url, rows=ROWS)
    limit = 11_099
    between = {"column": "amount_cents", "max_value": limit}
    report = run(
        tmp_path,
        control_store,
        url,
        [{"type": "expect_column_values_to_be_between", "kwargs": between, "severity": "warning"}],
    )
    assert report["ran"][-1] == "validate"
    assert read_state(control_store, "orders-cents").phase is Phase.VALIDATED
    [entry] = audited(control_store)
    assert entry["passed"] is True and entry["outcomes"][0]["success"] is False
    assert entry["summary"] == (
        f"0/1 expectations met; warnings: expect_column_values_to_be_between(column=amount_cents, "
        f"max_value={limit}): observed {cents_over(limit)} (unexpected values e.g. 11100)"
    )
