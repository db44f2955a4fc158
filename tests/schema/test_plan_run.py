"""The schema change as a plan of typed stages, run by the one evaluator against a real control
store: stop after validate, roll back (the table exactly as before), restart, run to the end
through both approvals; a rollback after contract began is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.flags.store import get_flag
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target
from shiftover.schema.errors import ContractRefusedError
from shiftover.schema.plan import build_schema_plan, explain_schema_change
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ExpandContractSpec


def test_the_plan_declares_approvals_and_irreversibility_as_data() -> None:
    plan = build_schema_plan(make_spec("sqlite:///unused.db"))
    assert [s.name for s in plan] == [
        "expand", "sync", "backfill", "validate", "switch_reads", "switch_writes", "stop_sync", "drop_old_columns",
    ]  # fmt: skip
    assert [s.name for s in plan if s.needs_approval] == ["stop_sync", "drop_old_columns"]
    assert plan.irreversible_phases == {Phase.OLD_WRITES_STOPPED, Phase.DECOMMISSIONED}
    text = explain_schema_change(make_spec("sqlite:///unused.db"))
    assert "amount -> amount_cents (bigint)" in text and "[APPROVAL, IRREVERSIBLE]" in text


def write_spec(tmp_path: Path, spec: ExpandContractSpec) -> str:
    path = spec_file(tmp_path, spec, "change")
    return str(path)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
def test_run_rollback_restart_and_contract(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=500)
    spec = make_spec(url)
    path, control = write_spec(tmp_path, spec), str(control_store.engine.url)
    before = snapshot_table(engine, "orders", ("id",))
    options = RunOptions(auto_approve=True)

    report = run_schema_change(path, control, options, stop_after="validate")
    assert report["ran"] == ["expand", "sync", "backfill", "validate"]
    assert read_state(control_store, spec.name).phase is Phase.VALIDATED

    rollback_schema_change(spec, control_store, "test")
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    assert snapshot_table(engine, "orders", ("id",)) == before
    assert run_schema_change(path, control, options)["note"].startswith(f"{spec.name} is rolled back")

    report = run_schema_change(path, control, options, restart=True, stop_after="switch_writes")
    assert report["ran"][0] == "expand" and report["ran"][-1] == "switch_writes"
    assert get_flag(control_store.engine, f"{spec.name}:schema.reads").value == {"columns": "new"}  # type: ignore[union-attr]

    report = run_schema_change(path, control, options)
    assert report["ran"] == ["stop_sync", "drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    approvals = [e for e in control_store.audit_entries(spec.name) if e["action"] == "approval"]
    assert [e["detail"]["step"] for e in approvals] == ["stop_sync", "drop_old_columns"]
    assert Target.of(engine, spec).column_names() == ["id", "note", "amount_cents", "channel"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 2")).scalar() == 74
    with pytest.raises(ContractRefusedError):
        rollback_schema_change(spec, control_store, "test")
    assert run_schema_change(path, control, options)["note"].startswith("nothing left to do")


def test_a_rollback_fences_off_a_running_run(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    from shiftover.control.lease import acquire_lease, read_lease
    from shiftover.errors import LeaseLostError

    url = sqlite_database()
    create_orders(url, rows=50)
    spec = make_spec(url)
    run_schema_change(write_spec(tmp_path, spec), str(control_store.engine.url), RunOptions(), stop_after="sync")
    running = acquire_lease(control_store.engine, spec.name, "flow-run/still-running")
    rollback_schema_change(spec, control_store, "test", "drill")
    with pytest.raises(LeaseLostError):
        running.ensure()  # its next fenced write (a stage recorded, an irreversible step) fails
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    assert read_lease(control_store.engine, spec.name).holder is None  # revoked, not waited for
    assert [e["detail"]["reason"] for e in control_store.audit_entries(spec.name, action="rollback_started")] == [
        "drill"
    ]
    assert rollback_schema_change(spec, control_store, "test")["note"] == "already rolled back"


def test_a_second_run_at_once_is_refused_before_any_ddl(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    from shiftover.control.lease import acquire_lease
    from shiftover.errors import LeaseHeldError

    url = sqlite_database()
    engine = create_orders(url, rows=50)
    spec = make_spec(url)
    path = write_spec(tmp_path, spec)
    run_schema_change(path, str(control_store.engine.url), RunOptions(), stop_after="sync")
    expanded = snapshot_table(engine, "orders", ("id",))
    acquire_lease(control_store.engine, spec.name, "flow-run/the-first-run")
    with pytest.raises(LeaseHeldError, match="flow-run/the-first-run"):
        run_schema_change(path, str(control_store.engine.url), RunOptions())
    assert snapshot_table(engine, "orders", ("id",)) == expanded
    assert read_state(control_store, spec.name).completed == {"expand", "sync"}
