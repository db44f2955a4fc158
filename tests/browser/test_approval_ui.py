"""Issue 5, proven the way a person does it: trigger the migration deployment from the Prefect
UI, wait for the pause, fill and submit the approval form, and watch the migration move on.

Opt-in (``--browser``); ``.ci/run`` installs Chromium and runs them. Screenshots of the paused
run, the form and the artifacts go to ``test-output/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from shiftover.approvals import pending_requests
from shiftover.control.store import open_store
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.phases import Phase

from .conftest import OUTPUT, Stack

pytestmark = pytest.mark.browser

APPROVER = "alice"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def quick_run(page: Any, stack: Stack, deployment_id: str) -> dict[str, Any]:
    """Deployment page -> "Run" -> "Quick run", as a person starts a migration."""
    page.goto(f"{stack.url}/v2/deployments/deployment/{deployment_id}")
    page.get_by_role("button", name=re.compile(r"^Run$")).click()
    page.get_by_role("menuitem", name="Quick run").click()
    # spec_path has no default in the flow's signature, so the UI shows the deployment's
    # parameters (the test's spec) in a "Run Deployment" dialog before it runs.
    dialog = page.get_by_role("dialog", name="Run Deployment")
    dialog.get_by_text("spec_path").wait_for()
    shot(page, "ui-run-deployment")
    before = {r["id"] for r in stack.flow_runs()}
    dialog.get_by_role("button", name=re.compile(r"^Run$")).click()
    return stack.wait_for_new_run(deployment_id, before)  # the server is the judge that the click took


def open_resume_form(page: Any, stack: Stack, run_id: str) -> Any:
    page.goto(f"{stack.url}/v2/runs/flow-run/{run_id}")
    try:
        page.get_by_text(re.compile(r"^(Paused|Suspended)$")).first.wait_for()
    except Exception:
        shot(page, "ui-resume-form-not-paused")
        raise
    page.get_by_role("button", name="Open menu").click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume Flow Run")
    dialog.wait_for()
    return dialog


def submit(dialog: Any, approver: str, confirm: str, reason: str) -> None:
    dialog.get_by_role("textbox", name="Approver").fill(approver)
    dialog.get_by_role("textbox", name="Confirm Name").fill(confirm)
    dialog.get_by_role("textbox", name="Reason (Optional)").fill(reason)
    dialog.get_by_role("button", name="Resume").click()


def wait_phase(stack: Stack, control_url: str, name: str, phase: Phase, timeout: float = 180) -> None:
    """A resumed suspended run goes back through the worker (a new process): generous on a loaded
    machine, and on failure the worker's log says whether it ever picked the run up again."""
    store = open_store(control_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and store.phase(name) is not phase:
        time.sleep(0.5)
    assert store.phase(name) is phase, f"{name} at {store.phase(name)}, not {phase}\n{stack.diagnostics()}"


def test_every_approval_in_the_ui_walks_the_migration_to_decommissioned(
    stack: Stack, page: Any, demo_spec: Callable[..., dict[str, str]]
) -> None:
    """Quick run, then each of the plan's three approvals (switch writes, stop old writes, drop)
    answered in the Resume form of the run the operator started, to the end of the migration."""
    params = demo_spec("ui-orders", retention_days=0)
    deployment = stack.deploy("migrate", {**params, "poll_interval_seconds": 1, "flag_ttl_seconds": 0.2})
    quick_run(page, stack, deployment)
    # The approval pauses the migrate run itself (stages are not subflows): its Resume is on the run
    # the operator started, and being deployed it suspends (no worker slot held while it waits).
    paused = stack.wait_for_run("PAUSED", timeout=180, flow_name="migrate")
    store = open_store(params["control_url"])
    steps = [
        ("switch_writes", Phase.READS_SWITCHED, Phase.WRITES_SWITCHED),
        ("stop_old_writes", Phase.WRITES_SWITCHED, Phase.ARCHIVED),  # archive follows without a question
        ("drop", Phase.ARCHIVED, Phase.DECOMMISSIONED),
    ]
    for i, (step, waiting_at, reached) in enumerate(steps):
        if i:  # the same top-level run pauses again at the next approval
            stack.wait_for_run("PAUSED", timeout=180, run_id=paused["id"])
        assert store.phase("ui-orders") is waiting_at, f"{step}: at {store.phase('ui-orders')}\n{stack.diagnostics()}"
        assert [r.step for r in pending_requests(store.engine, "ui-orders")] == [step]
        dialog = open_resume_form(page, stack, paused["id"])
        shot(page, f"ui-approval-{step}")
        submit(dialog, APPROVER, "ui-orders", f"{step}: gates green, clicked in the UI")
        stack.wait_until_resumed(paused["id"])
        wait_phase(stack, params["control_url"], "ui-orders", reached)
        if step == "switch_writes":
            assert read_routing(store.engine, "ui-orders").writes is WriteMode.DUAL_NEW_PRIMARY

    approvals = store.audit_entries("ui-orders", action="approval")
    assert [(a["actor"], a["detail"]["reason"]) for a in approvals] == [
        (APPROVER, f"{step}: gates green, clicked in the UI") for step, _, _ in steps
    ]
    parent = stack.wait_for_run("COMPLETED", timeout=120, run_id=paused["id"])
    page.goto(f"{stack.url}/v2/runs/flow-run/{parent['id']}?tab=Artifacts")
    page.get_by_text("ui-orders-story", exact=True).first.wait_for()
    shot(page, "ui-approval-artifacts")
    page.get_by_text("ui-orders-story", exact=True).first.click()
    picture = page.locator("img[alt='timeline of ui-orders']")
    picture.wait_for()
    assert picture.evaluate("img => img.complete && img.naturalWidth") > 100  # the UI renders the data URI
    shot(page, "ui-story")


def test_a_wrong_confirmation_in_the_ui_keeps_the_suspended_run_paused(
    stack: Stack, page: Any, demo_spec: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """With approvers' keys in the spec (issue 16), alice pastes the signature `shiftover sign` made
    for the question the run asks; a wrong confirmation is still refused by the server first."""
    from shiftover.approvals import challenge_of, pending_request_of
    from shiftover.signing import generate_key, load_private_key, sign_approval, write_private_key

    pem, public = generate_key()
    write_private_key(tmp_path / "alice.pem", pem)
    params = demo_spec("ui-wrong", keys={APPROVER: public})
    # A top-level deployed run waits with suspend_flow_run: its process exits (no worker slot
    # held) and, once resumed, the worker runs it again from the top, which resumes from the
    # control store and finds the answer under the pause key.
    deployment = stack.deploy("cutover", {**params, "poll_interval_seconds": 1})
    store = open_store(params["control_url"])
    _validated(params, "ui-wrong")
    quick_run(page, stack, deployment)
    paused = stack.wait_for_run("PAUSED", timeout=180, flow_name="cutover")
    assert paused["state_name"] == "Suspended"

    request = pending_request_of(store.engine, f"flow-run/{paused['id']}")
    assert request is not None and request.step == "switch_writes"
    signature = sign_approval(load_private_key(tmp_path / "alice.pem"), challenge_of(request), "approve", APPROVER)
    dialog = open_resume_form(page, stack, paused["id"])
    dialog.get_by_role("textbox", name=re.compile(r"^Signature")).fill(signature)
    submit(dialog, APPROVER, "ui-orders", "wrong migration typed")
    time.sleep(2)  # the server answers with an error toast; give the run every chance to move
    shot(page, "ui-wrong-confirmation-refused")
    assert stack.call("GET", f"/flow_runs/{paused['id']}")["state_type"] == "PAUSED"
    assert dialog.is_visible()
    assert store.phase("ui-wrong") is Phase.READS_SWITCHED
    assert read_routing(store.engine, "ui-wrong").writes is WriteMode.DUAL_OLD_PRIMARY

    dialog.get_by_role("textbox", name="Confirm Name").fill("ui-wrong")
    dialog.get_by_role("button", name="Resume").click()
    stack.wait_until_resumed(paused["id"])
    wait_phase(stack, params["control_url"], "ui-wrong", Phase.WRITES_SWITCHED)
    stack.wait_for_run("COMPLETED", timeout=120, run_id=paused["id"])
    [approval] = store.audit_entries("ui-wrong", action="approval")
    assert approval["actor"] == APPROVER and approval["detail"]["signature_verified"] is True


def _validated(params: dict[str, str], name: str) -> None:
    """Bring the second migration to reads_switched without the UI (the first test covers that path)."""
    from shiftover import cutover as flips
    from shiftover.checks.gate import GateContext, run_gates
    from shiftover.migration import load_migration
    from shiftover.phases import ORDER
    from shiftover.rowsync import sync_keys
    from shiftover.spec import GateSpec

    m = load_migration(params["spec_path"], params["control_url"])
    sync_keys(m.source, m.target, m.mapping, [(i,) for i in range(1, 3_001)])
    flips.enable_dual_write(m.store.engine, name, "test")
    run_gates(GateContext(m, "validate"), (GateSpec(name="checksum"),))
    flips.move_reads(m.store.engine, name, 100, "test")
    for phase in ORDER[1 : ORDER.index(Phase.READS_SWITCHED) + 1]:
        if phase not in (Phase.SHADOW_READING, Phase.READS_CANARY):
            m.store.transition(name, phase, "test", "setup")


def test_a_rollback_from_the_ui_leaves_the_pending_approval_unusable(
    stack: Stack, page: Any, demo_spec: Callable[..., dict[str, str]]
) -> None:
    """An operator rolls back from the UI (the rollback deployment's Quick run) while the write
    switch waits for its approval: the waiting run is answered by the rollback and stops, its
    Resume is gone, and a late approval through the API is refused; writes never switch."""
    params = demo_spec("ui-back")
    cutover_deployment = stack.deploy("cutover", {**params, "poll_interval_seconds": 1})
    rollback_deployment = stack.deploy("rollback", {**params, "reason": "rolled back from the UI"})
    store = open_store(params["control_url"])
    _validated(params, "ui-back")
    quick_run(page, stack, cutover_deployment)
    paused = stack.wait_for_run("PAUSED", timeout=180, flow_name="cutover")

    quick_run(page, stack, rollback_deployment)
    stack.wait_for_run("COMPLETED", timeout=180, flow_name="rollback")
    assert store.phase("ui-back") is Phase.ROLLED_BACK
    stack.wait_for_final(paused["id"], timeout=180)  # answered by the rollback: it ran again and stopped

    page.goto(f"{stack.url}/v2/runs/flow-run/{paused['id']}")
    page.get_by_role("button", name="Open menu").click()
    page.get_by_role("menu").wait_for()
    shot(page, "ui-rollback-no-resume")
    assert page.get_by_role("menuitem", name="Resume").count() == 0
    page.keyboard.press("Escape")

    late = {"approver": APPROVER, "confirm_name": "ui-back", "reason": "too late", "decision": "approve"}
    answer = stack.call("POST", f"/flow_runs/{paused['id']}/resume", {"run_input": late})
    assert answer["status"] != "ACCEPT", answer
    assert read_routing(store.engine, "ui-back").writes is not WriteMode.DUAL_NEW_PRIMARY
    assert store.phase("ui-back") is Phase.ROLLED_BACK
    assert store.audit_entries("ui-back", action="approval") == []


def test_an_expand_contract_change_is_approved_in_the_ui_to_its_contract(
    stack: Stack, page: Any, tmp_path: Path
) -> None:
    """The `expand-contract` deployment's Quick run: the change runs to switch_writes, pauses for
    stop_sync and again for drop_old_columns, each answered in the Resume form; the validate stage's
    Great Expectations table is on the run's Artifacts tab, and every row's amount_cents equals the
    amount it had before, times 100, computed here in Python."""
    import sqlalchemy as sa
    import yaml

    from shiftover.connect import get_engine
    from shiftover.demo import create_orders
    from shiftover.demo.expand import spec_data

    name = "ui-cents"
    url, control_url = f"sqlite:///{tmp_path}/app.db", f"sqlite:///{tmp_path}/{name}-control.db"
    engine = get_engine(url)
    create_orders(engine, rows=2_000)
    with engine.connect() as conn:
        before = {i: a for i, a in conn.execute(sa.text("SELECT id, CAST(amount AS TEXT) FROM orders"))}
    spec = {
        **spec_data(url),
        "name": name,
        "approvals": {"approvers": [APPROVER], "timeout_seconds": 300},
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount_cents", "min_value": 0}}
        ],
    }
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    params = {"spec_path": str(spec_path), "control_url": control_url}
    deployment = stack.deploy("expand-contract", {**params, "poll_interval_seconds": 1})
    quick_run(page, stack, deployment)
    paused = stack.wait_for_run("PAUSED", timeout=180, flow_name="expand-contract")
    store = open_store(control_url)
    for i, (step, waiting_at, reached) in enumerate(
        [
            ("stop_sync", Phase.WRITES_SWITCHED, Phase.OLD_WRITES_STOPPED),
            ("drop_old_columns", Phase.OLD_WRITES_STOPPED, Phase.DECOMMISSIONED),
        ]
    ):
        if i:
            stack.wait_for_run("PAUSED", timeout=180, run_id=paused["id"])
        assert store.phase(name) is waiting_at, f"{step}: at {store.phase(name)}\n{stack.diagnostics()}"
        assert [r.step for r in pending_requests(store.engine, name)] == [step]
        dialog = open_resume_form(page, stack, paused["id"])
        shot(page, f"ui-expand-approval-{step}")
        submit(dialog, APPROVER, name, f"{step}: clicked in the UI")
        stack.wait_until_resumed(paused["id"])
        wait_phase(stack, control_url, name, reached)

    stack.wait_for_run("COMPLETED", timeout=120, run_id=paused["id"])
    approvals = store.audit_entries(name, action="approval")
    assert [a["actor"] for a in approvals] == [APPROVER, APPROVER]
    assert [c["name"] for c in sa.inspect(engine).get_columns("orders")][-1] == "amount_cents"
    assert "amount" not in [c["name"] for c in sa.inspect(engine).get_columns("orders")]
    with engine.connect() as conn:
        after = dict(conn.execute(sa.text("SELECT id, amount_cents FROM orders")).all())
    expected = {
        i: None if a is None else int((Decimal(a) * 100).to_integral_value(ROUND_HALF_UP)) for i, a in before.items()
    }
    assert after == expected

    page.goto(f"{stack.url}/v2/runs/flow-run/{paused['id']}?tab=Artifacts")
    page.get_by_text(f"{name}-expectations", exact=True).first.wait_for()
    page.get_by_text(f"{name}-validation", exact=True).first.wait_for()
    page.get_by_text(f"{name}-in-step", exact=True).first.wait_for()  # stop_sync's proof, before its DDL
    made = stack.call("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [paused["id"]]}}})
    approvals_asked = sorted(a["key"] for a in made if "-approve-" in (a["key"] or ""))
    # once each: the run resumed after a suspension finds its request, and its artifact, already there
    assert approvals_asked == [f"{name}-approve-drop-old-columns", f"{name}-approve-stop-sync"], approvals_asked
    shot(page, "ui-expand-artifacts")


def sync_triggers(engine: Any) -> list[str]:
    """The triggers on orders, read from SQLite's catalogue."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'orders' ORDER BY name"
        return [n for (n,) in conn.execute(sa.text(query))]


def test_an_expand_contract_change_waits_its_retention_period_then_drops_from_the_ui(
    stack: Stack, page: Any, tmp_path: Path
) -> None:
    """``retention_hours: 1``: stop_sync is approved in the Resume form and the run ends Completed
    before drop_old_columns, the old column still there, its Artifacts tab saying when the drop is
    due. Meanwhile an old-version write to ``amount`` alone reaches ``amount_cents`` through the
    forward-only trigger. A second Quick run, the deployment now with ``retention_seconds=0``,
    asks the drop's approval, answered in the browser: the column and every sync trigger are gone,
    and the row keeps the value carried forward."""
    from datetime import timedelta

    import sqlalchemy as sa
    import yaml

    from shiftover.connect import get_engine
    from shiftover.demo import create_orders
    from shiftover.demo.expand import spec_data

    name = "ui-keep"
    url, control_url = f"sqlite:///{tmp_path}/app.db", f"sqlite:///{tmp_path}/{name}-control.db"
    engine = get_engine(url)
    create_orders(engine, rows=1_000)
    spec = {
        **spec_data(url),
        "name": name,
        "approvals": {"approvers": [APPROVER], "timeout_seconds": 300},
        "retention_hours": 1,
    }
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    params = {"spec_path": str(spec_path), "control_url": control_url, "poll_interval_seconds": 1}
    deployment = stack.deploy("expand-contract", params)
    store = open_store(control_url)

    # 1. the first run: stop_sync approved in the browser, then it ends before the drop
    first = quick_run(page, stack, deployment)
    stack.wait_for_run("PAUSED", timeout=180, run_id=first["id"])
    assert store.phase(name) is Phase.WRITES_SWITCHED, stack.diagnostics()
    assert [r.step for r in pending_requests(store.engine, name)] == ["stop_sync"]
    dialog = open_resume_form(page, stack, first["id"])
    submit(dialog, APPROVER, name, "stop_sync: clicked in the UI, keep the old column an hour")
    stack.wait_until_resumed(first["id"])
    ended = stack.wait_for_final(first["id"], timeout=180)
    assert ended["state_type"] == "COMPLETED", f"{ended['state_name']}\n{stack.diagnostics()}"
    assert store.phase(name) is Phase.OLD_WRITES_STOPPED
    assert pending_requests(store.engine, name) == []
    columns = [c["name"] for c in sa.inspect(engine).get_columns("orders")]
    assert "amount" in columns and "amount_cents" in columns
    assert sync_triggers(engine) and all("_fwd" in t for t in sync_triggers(engine)), sync_triggers(engine)
    stopped = [h for h in store.history(name) if h.phase == Phase.OLD_WRITES_STOPPED][-1].at
    [retention] = store.audit_entries(name, action="retention")
    due = retention["detail"]["drop_due"]
    assert due == (stopped + timedelta(hours=1)).isoformat(), (due, stopped)

    page.goto(f"{stack.url}/v2/runs/flow-run/{first['id']}?tab=Artifacts")
    page.get_by_text(f"{name}-in-step", exact=True).first.wait_for()
    page.get_by_text(f"{name}-retention", exact=True).first.wait_for()
    shot(page, "ui-expand-retention-artifacts")
    page.get_by_text(f"{name}-retention", exact=True).first.click()
    page.get_by_text(re.compile(r"kept until " + re.escape(due[:19]))).first.wait_for()
    shot(page, "ui-expand-retention")

    # 2. an application instance still on the old version writes the old column only
    with engine.begin() as conn:
        row = conn.execute(sa.text("SELECT id, amount_cents FROM orders ORDER BY id LIMIT 1 OFFSET 6")).one()
        conn.execute(sa.text("UPDATE orders SET amount = 987.65 WHERE id = :id"), {"id": row.id})
    carried = int((Decimal("987.65") * 100).to_integral_value(ROUND_HALF_UP))
    assert carried != row.amount_cents
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = :id"), {"id": row.id}).scalar_one()
    assert got == carried

    # 3. a second run from the deployment with retention_seconds=0: the drop, approved in the browser
    stack.deploy("expand-contract", {**params, "retention_seconds": 0})
    second = quick_run(page, stack, deployment)
    stack.wait_for_run("PAUSED", timeout=180, run_id=second["id"])
    assert [r.step for r in pending_requests(store.engine, name)] == ["drop_old_columns"]
    dialog = open_resume_form(page, stack, second["id"])
    shot(page, "ui-expand-retention-drop")
    submit(dialog, APPROVER, name, "drop_old_columns: retention waived, clicked in the UI")
    stack.wait_until_resumed(second["id"])
    wait_phase(stack, control_url, name, Phase.DECOMMISSIONED)
    stack.wait_for_run("COMPLETED", timeout=120, run_id=second["id"])
    assert [a["actor"] for a in store.audit_entries(name, action="approval")] == [APPROVER, APPROVER]
    assert "amount" not in [c["name"] for c in sa.inspect(engine).get_columns("orders")]
    assert sync_triggers(engine) == []
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = :id"), {"id": row.id}).scalar_one()
    assert kept == carried
