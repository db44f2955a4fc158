"""The validate flow under Prefect's harness: a failing blocking gate fails the flow with its
report as artifacts and leaves the phase alone; a passing run advances to validated."""

from __future__ import annotations

import pytest
from prefect.artifacts import Artifact

from shiftover.control.store import open_store
from shiftover.errors import GateError
from shiftover.flows.validate import validate
from shiftover.phases import Phase
from shiftover.story import artifact_key

from .conftest import break_target, bring_to_backfilled, spec_dict, write_spec

pytestmark = pytest.mark.flows


def test_failing_checksum_gate_fails_the_flow_with_an_artifact(prefect_harness, orders_urls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control_url = f"sqlite:///{tmp_path}/control.db"
    data = spec_dict(
        *orders_urls,
        name="orders-blocked",
        validation={"repair": False},
        gates={"validate": ["row_count", "checksum", "expectations"]},
    )
    data["gates"]["validate"][0] = {"name": "row_count", "blocking": False}  # report, don't stop
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register("orders-blocked", data)
    bring_to_backfilled(store, "orders-blocked")
    break_target(orders_urls[1])

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, GateError) and error.gate == "checksum"
    assert [r.gate for r in error.report] == ["checksum"]  # the diff runs first; nothing after it ran
    assert store.phase("orders-blocked") == Phase.BACKFILLED
    table = Artifact.get(artifact_key("orders-blocked", "validate", "checksum"))
    assert table is not None and "6 differing key(s)" in (table.description or "")
    assert "missing" in str(table.data) and "extra" in str(table.data)
    overview = Artifact.get(artifact_key("orders-blocked", "validate", "gates"))
    assert overview is not None and "**blocked**" in str(overview.data)


def test_passing_gates_advance_to_validated_after_repair(prefect_harness, orders_urls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control_url = f"sqlite:///{tmp_path}/control.db"
    # declared with row_count first: a missing row would block it before the diff could repair
    data = spec_dict(*orders_urls, name="orders-repaired", gates={"validate": ["row_count", "checksum"]})
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register("orders-repaired", data)
    bring_to_backfilled(store, "orders-repaired")
    break_target(orders_urls[1])

    result = validate(spec_path, control_url)

    assert result["phase"] == "validated"
    assert [g["passed"] for g in result["gates"]] == [True, True]
    assert store.phase("orders-repaired") == Phase.VALIDATED
    assert store.audit_entries("orders-repaired", action="repair")


def test_validate_refuses_to_start_before_the_backfill(prefect_harness, orders_urls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control_url = f"sqlite:///{tmp_path}/control.db"
    data = spec_dict(*orders_urls, name="orders-early")
    spec_path = write_spec(tmp_path, data)
    open_store(control_url).register("orders-early", data)

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    assert "stage 'dual_write' is not done yet; run the 'dual-write' flow" in str(state.result(raise_on_failure=False))
