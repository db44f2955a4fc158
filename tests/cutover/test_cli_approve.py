"""`shiftover approve` answers a paused run from the terminal, as the UI's Resume form would."""

from __future__ import annotations

import threading

import pytest
from typer.testing import CliRunner

from shiftover.cli import app
from shiftover.phases import Phase

from .conftest import paused_run, run_state

pytestmark = pytest.mark.flows


def test_cli_refuses_a_wrong_name_then_approves(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.cutover import cutover

    setup = make_migration(Phase.READS_SWITCHED)
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = cutover(
            setup.spec_path, setup.control_url, soak_seconds=0, poll_interval_seconds=1, approval_timeout_seconds=30
        )

    flow_thread = threading.Thread(target=run, daemon=True)
    flow_thread.start()
    run_id = str(paused_run("cutover"))
    runner = CliRunner()
    status = runner.invoke(app, ["status", setup.name, "--control-url", setup.control_url])
    assert "approval pending: switch_writes" in status.output and f"shiftover approve {run_id}" in status.output
    wrong = runner.invoke(app, ["approve", run_id, "--approver", "alice", "--confirm-name", "orders"])
    assert wrong.exit_code == 2 and "error:" in wrong.output
    assert run_state(paused_run("cutover")) == "PAUSED"
    right = runner.invoke(
        app, ["approve", run_id, "--approver", "alice", "--confirm-name", "orders-cut", "--reason", "gates green"]
    )
    assert right.exit_code == 0, right.output
    assert f"approved: flow run {run_id}" in right.output
    flow_thread.join(30)
    assert outcome["result"]["phase"] == Phase.WRITES_SWITCHED  # type: ignore[index]
    [approval] = setup.store.audit_entries(setup.name, action="approval")
    assert (approval["actor"], approval["detail"]["reason"]) == ("alice", "gates green")


def test_approve_without_a_prefect_server_explains_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        out = CliRunner().invoke(
            app, ["approve", "00000000-0000-0000-0000-000000000000", "--approver", "a", "--confirm-name", "m"]
        )
    assert out.exit_code == 2 and "set PREFECT_API_URL" in out.output and "None" not in out.output
