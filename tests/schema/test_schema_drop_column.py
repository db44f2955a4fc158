"""drop_column: nothing happens to the column until the last contract step, which runs only after
both approvals; a rollback before then leaves the table exactly as it was; after it, the column is
gone and a rollback is refused. The preflight refuses a column an index or key uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ENGINES, create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target
from shiftover.schema.errors import ContractRefusedError
from shiftover.schema.plan import build_schema_plan
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table

DROP = {"op": "drop_column", "column": "note"}


@pytest.mark.parametrize("kind", ENGINES)
def test_the_column_goes_only_after_both_approvals(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[DROP])
    path = spec_file(tmp_path, spec, "drop")
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    before = snapshot_table(engine, "orders", ("id",))

    report = run_schema_change(str(path), control, options, stop_after="switch_writes")
    assert report["ran"][-1] == "switch_writes" and "note" in Target.of(engine, spec).column_names()
    assert snapshot_table(engine, "orders", ("id",)) == before  # nothing done to the table yet
    rollback_schema_change(spec, control_store, "tester")
    assert snapshot_table(engine, "orders", ("id",)) == before

    report = run_schema_change(str(path), control, options, restart=True)
    assert report["ran"][-2:] == ["stop_sync", "drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    approvals = [e["detail"]["step"] for e in control_store.audit_entries(spec.name) if e["action"] == "approval"]
    assert approvals == ["stop_sync", "drop_old_columns"]
    assert Target.of(engine, spec).column_names() == ["id", "amount"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 300
    with pytest.raises(ContractRefusedError):
        rollback_schema_change(spec, control_store, "tester")
    assert read_state(control_store, spec.name).phase is Phase.DECOMMISSIONED


def test_the_plan_drops_it_behind_the_approval() -> None:
    plan = build_schema_plan(make_spec("sqlite:///unused.db", operations=[DROP]))
    last = plan.stages[-1]
    assert last.name == "drop_old_columns" and last.needs_approval and not last.reversible
    assert "drop note from orders" in last.does


@pytest.mark.parametrize(
    ("ops", "says"),
    [
        ([DROP, {"op": "create_index", "name": "ix", "columns": ["note"]}], "dropped column"),
        ([{"op": "drop_column", "column": "id"}], "dropped column"),
        ([DROP, DROP], "a column twice"),
    ],
)
def test_the_spec_refuses_a_dropped_column_used_elsewhere(ops: list[dict[str, object]], says: str) -> None:
    with pytest.raises(SpecError) as caught:
        make_spec("sqlite:///unused.db", operations=ops)
    assert says in caught.value.problem, caught.value


@pytest.mark.parametrize("kind", ENGINES)
def test_the_preflight_refuses_an_indexed_or_missing_column(kind: str, database_url: Callable[[str], str]) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX ix_orders_note ON orders (note)"))
    for column, says in (("note", "used by ['ix_orders_note']"), ("memo", "no column 'memo'")):
        with pytest.raises(SpecError) as caught:
            check_change(make_spec(url, operations=[{"op": "drop_column", "column": column}]))
        assert caught.value.field == "operations.0.column" and says in caught.value.problem, caught.value
