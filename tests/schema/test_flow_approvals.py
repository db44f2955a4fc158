"""The expand-contract flow under Prefect: it runs every stage up to contract, pauses for a
person's approval before each irreversible stage (answered with ``resume_flow_run`` as the UI
would), and a rejection leaves the table expanded and still in sync."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.errors import ApprovalError
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target
from shiftover.schema.snapshot import snapshot_table

sys.path.insert(0, str(Path(__file__).parents[1]))  # the cutover tests' helpers: the person at the UI
from cutover.conftest import Background, paused_run

pytestmark = pytest.mark.flows

NAME = "orders-cents"
GOOD = {"approver": "alice", "confirm_name": NAME, "reason": "validated, reads and writes on the new column"}


def start(tmp_path: Path, url: str, control_url: str) -> Background:
    from shiftover.flows.expand import expand_contract

    spec = make_spec(url, approvals={"approvers": ["alice"], "timeout_seconds": 60})
    path = spec_file(tmp_path, spec, "change")
    run = Background(lambda: expand_contract(str(path), control_url, poll_interval_seconds=1))
    run.start()
    return run


def answer(decision: str = "approve") -> None:
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(paused_run("expand-contract", timeout=60), run_input={**GOOD, "decision": decision})


def test_contract_waits_for_two_approvals(
    prefect_harness: None, sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = sqlite_database()
    engine = create_orders(url, rows=300)
    run = start(tmp_path, url, str(control_store.engine.url))
    answer()  # stop_sync
    answer()  # drop_old_columns
    run.join(60)
    assert run.error is None, run.error
    assert run.result["phase"] == Phase.DECOMMISSIONED  # type: ignore[index]
    approvals = control_store.audit_entries(NAME, action="approval")
    steps = [(a["actor"], a["detail"]["step"]) for a in approvals]
    assert steps == [("alice", "stop_sync"), ("alice", "drop_old_columns")]
    assert Target.of(engine, make_spec(url)).column_names() == ["id", "note", "amount_cents", "channel"]


def test_a_rejection_leaves_the_table_expanded_and_in_sync(
    prefect_harness: None, sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = sqlite_database()
    engine = create_orders(url, rows=300)
    run = start(tmp_path, url, str(control_store.engine.url))
    answer("reject")
    run.join(60)
    assert isinstance(run.error, ApprovalError), run.error
    assert read_state(control_store, NAME).phase is Phase.WRITES_SWITCHED
    assert len(snapshot_table(engine, "orders", ("id",)).triggers) == 2  # still in sync
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = 999 WHERE id = 1"))
        assert conn.execute(sa.text("SELECT amount FROM orders WHERE id = 1")).scalar() == 9.99
