"""stop_sync, the first irreversible stage, first proves every row in step: its new columns are
``up(old)`` or its old columns ``down(new)``. A row written past the sync (a session with the
triggers off, a write outside ColumnWrites under ``sync: application``) refuses the stage before
its DDL, naming the key; the change stays reversible, and runs on once the row is written again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.plan.stages import STARTED
from shiftover.schema.columns import Target
from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import OutOfStepError
from shiftover.schema.plan import explain_schema_change
from shiftover.schema.snapshot import snapshot_table
from shiftover.status import render_status, status_data


def write_past_the_sync(engine: sa.Engine, sync: str, key: int, amount: str) -> None:
    """Change ``amount`` alone, with nothing keeping ``amount_cents`` in step."""
    with engine.begin() as conn:
        if sync == "triggers":
            schema_dialect(engine).sync_off(conn)  # the session variable the triggers honour
        conn.execute(sa.text("UPDATE orders SET amount = :a WHERE id = :i"), {"a": amount, "i": key})


@pytest.mark.parametrize(
    ("kind", "sync"), [("postgres", "triggers"), ("mariadb", "triggers"), ("sqlite", "application")]
)
def test_stop_sync_refuses_a_row_written_past_the_sync(
    kind: str, sync: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=500)
    spec = make_spec(url, sync=sync)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    options = RunOptions(auto_approve=True)
    run_schema_change(path, control, options, stop_after="switch_writes")
    phase = read_state(control_store, spec.name).phase
    write_past_the_sync(engine, sync, 42, "999.99")
    before = snapshot_table(engine, "orders", ("id",))

    with pytest.raises(OutOfStepError) as refused:
        run_schema_change(path, control, options)
    assert refused.value.count == 1 and refused.value.keys == ((42,),)
    assert "stop_sync refused before its DDL" in str(refused.value)
    assert snapshot_table(engine, "orders", ("id",)) == before  # triggers, columns and rows as they were
    assert read_state(control_store, spec.name).phase is phase
    entries = control_store.audit_entries(spec.name)
    assert not [e for e in entries if e["action"] == STARTED]  # not begun: a rollback may still run
    proof = [e["detail"] for e in entries if e["action"] == "schema_in_step"]
    assert [c["mismatches"] for c in proof[-1]["checks"]] == [1]

    with engine.begin() as conn:  # the right value written to the new side, the sync (or the application) following
        both = ", amount = 999.99" if sync == "application" else ""
        conn.execute(sa.text(f"UPDATE orders SET amount_cents = 99999{both} WHERE id = 42"))
    report = run_schema_change(path, control, options)
    assert report["ran"] == ["stop_sync", "drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 42")).scalar() == int(
            Decimal("999.99") * 100
        )


def test_a_refused_stop_sync_leaves_the_change_to_roll_back(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = sqlite_database()
    engine = create_orders(url, rows=300)
    before = snapshot_table(engine, "orders", ("id",))
    spec = make_spec(url, sync="application")
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="switch_writes")
    write_past_the_sync(engine, "application", 5, "12.34")
    with pytest.raises(OutOfStepError):
        run_schema_change(path, control, RunOptions(auto_approve=True))
    rollback_schema_change(spec, control_store, "test")
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    after = snapshot_table(engine, "orders", ("id",))
    assert Target.of(engine, spec).column_names() == ["id", "amount", "note"]
    with engine.connect() as conn:  # the write made past the sync is kept: the old side is the truth
        assert conn.execute(sa.text("SELECT amount FROM orders WHERE id = 5")).scalar() == pytest.approx(12.34)
    assert after.columns == before.columns


def test_the_old_columns_are_kept_for_the_retention_period_before_the_drop(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """``retention_hours: 2``: stop_sync runs, then the run stops before drop_old_columns, whose
    approval is not asked yet; the old column stays, no longer written. A run after the period (here
    told the period is over, ``retention_seconds=0``) drops it."""
    url = sqlite_database()
    engine = create_orders(url, rows=300)
    spec = make_spec(url, retention_hours=2)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    assert "after 2 hour(s) of retention" in explain_schema_change(spec)
    report = run_schema_change(path, control, RunOptions(auto_approve=True))
    assert report["ran"][-1] == "stop_sync" and "drop_old_columns" not in report["ran"]
    assert report["waiting"].startswith("the old columns (no longer written) are kept until ")
    assert read_state(control_store, spec.name).phase is Phase.OLD_WRITES_STOPPED
    assert "amount" in Target.of(engine, spec).column_names()
    entered = [h.at for h in control_store.history(spec.name) if h.phase == Phase.OLD_WRITES_STOPPED][-1]
    [due] = [e["detail"]["drop_due"] for e in control_store.audit_entries(spec.name, action="retention")]
    assert datetime.fromisoformat(due) - entered == timedelta(hours=2)
    asked = [e["detail"]["step"] for e in control_store.audit_entries(spec.name, action="approval")]
    assert asked == ["stop_sync"]
    assert f"retention: the drop is due at {due}" in render_status(control, spec.name)  # what an operator sees

    again = run_schema_change(path, control, RunOptions(auto_approve=True))  # still within it: waits again
    assert again["ran"] == [] and "waiting" in again
    done = run_schema_change(path, control, RunOptions(auto_approve=True, retention_seconds=0))
    assert done["ran"] == ["drop_old_columns"] and done["phase"] == Phase.DECOMMISSIONED
    assert "amount" not in Target.of(engine, spec).column_names()
    assert status_data(control, spec.name)["migrations"][0]["drop_due"] is None
