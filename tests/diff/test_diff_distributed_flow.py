"""The validate flow under Prefect's harness with ``validation.distributed``: the checksum gate
diffs through worker processes and its report, artifacts and repair are the in-process ones; a
SQLite control store fails the flow naming the field and leaves the phase alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from prefect.artifacts import Artifact

from shiftover.control.store import open_store
from shiftover.errors import SpecError
from shiftover.flows.validate import validate
from shiftover.phases import Phase
from shiftover.story import artifact_key

from .conftest import break_target, bring_to_backfilled, spec_dict, write_spec

pytestmark = pytest.mark.flows
DISTRIBUTED = {"workers": 2, "lease_ttl_seconds": 10}


def test_a_blocked_distributed_diff_reports_the_same_artifact(  # type: ignore[no-untyped-def]
    prefect_harness, orders_urls, tmp_path, pg_database: Callable[[], str]
) -> None:
    control_url = pg_database()
    data = spec_dict(
        *orders_urls,
        name="orders-spread",
        validation={"repair": False, "distributed": DISTRIBUTED},
        gates={"validate": ["checksum"]},
    )
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register("orders-spread", data)
    bring_to_backfilled(store, "orders-spread")
    expected = break_target(orders_urls[1])

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    assert store.phase("orders-spread") == Phase.BACKFILLED
    table: Any = Artifact.get(artifact_key("orders-spread", "validate", "checksum"))  # sync: not a coroutine
    assert table is not None and "6 differing key(s): 2 missing, 1 extra, 3 changed" in (table.description or "")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert isinstance(rows, list)
    shown = {(int(row["key"]), row["kind"]) for row in rows}
    assert shown == {(k[0], kind) for k, kind in expected.items()}


def test_the_distributed_diff_repairs_and_validates(  # type: ignore[no-untyped-def]
    prefect_harness, orders_urls, tmp_path, pg_database: Callable[[], str]
) -> None:
    control_url = pg_database()
    data = spec_dict(
        *orders_urls, name="orders-spread-ok", validation={"distributed": DISTRIBUTED}, gates={"validate": ["checksum"]}
    )
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register("orders-spread-ok", data)
    bring_to_backfilled(store, "orders-spread-ok")
    break_target(orders_urls[1])

    result = validate(spec_path, control_url)

    assert result["phase"] == "validated" and store.phase("orders-spread-ok") == Phase.VALIDATED
    assert store.audit_entries("orders-spread-ok", action="repair")


def test_a_sqlite_control_store_fails_the_flow_naming_the_field(prefect_harness, orders_urls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control_url = f"sqlite:///{tmp_path}/control.db"
    data = spec_dict(*orders_urls, name="orders-lone", validation={"distributed": DISTRIBUTED})
    spec_path = write_spec(tmp_path, data)
    store = open_store(control_url)
    store.register("orders-lone", data)
    bring_to_backfilled(store, "orders-lone")

    state = validate(spec_path, control_url, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SpecError) and "validation.distributed" in str(error), error
    assert store.phase("orders-lone") == Phase.BACKFILLED
