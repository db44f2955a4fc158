"""Issue 2 §7 and issue 5 §4: the approval before the write switch, answered from another thread
with ``resume_flow_run`` as the UI would; refused answers keep the run paused; time-outs fail safe."""

from __future__ import annotations

import threading

import pytest

from shiftover.approvals import check_approval
from shiftover.errors import ApprovalError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.flows.approval import Approval, approval_form
from shiftover.phases import Phase

from .conftest import Approver

pytestmark = pytest.mark.flows

GOOD = {"approver": "alice", "confirm_name": "orders-cut", "reason": "gates green"}


def run_cutover(setup, **kw):  # type: ignore[no-untyped-def]
    from shiftover.flows.cutover import cutover

    return cutover(setup.spec_path, setup.control_url, soak_seconds=0, poll_interval_seconds=1, **kw)


def test_approval_from_a_thread_switches_writes(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(Phase.VALIDATED)
    person = Approver("cutover", [GOOD])
    person.start()
    result = run_cutover(setup, approval_timeout_seconds=30)
    person.join(10)
    assert person.error is None and person.outcomes[0][0] == "accepted"
    assert result["phase"] == Phase.WRITES_SWITCHED
    routing = read_routing(setup.store.engine, setup.name)
    assert routing.writes is WriteMode.DUAL_NEW_PRIMARY and routing.reads_percent == 100
    [approval] = setup.store.audit_entries(setup.name, action="approval")
    assert approval["actor"] == "alice" and approval["detail"]["step"] == "switch_writes"
    assert approval["detail"]["automatic"] is False
    [switch] = setup.store.audit_entries(setup.name, action="write_switch")
    assert switch["detail"]["at"]  # the exact switch time is recorded


def test_wrong_confirmation_is_refused_by_the_server_then_a_correct_one_completes(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
) -> None:
    setup = make_migration(Phase.READS_SWITCHED)
    person = Approver("cutover", [{**GOOD, "confirm_name": "orders"}, {**GOOD, "approver": ""}, GOOD])
    person.start()
    result = run_cutover(setup, approval_timeout_seconds=30)
    person.join(10)
    assert person.error is None
    (wrong, wrong_state), (empty, empty_state), (right, _) = person.outcomes
    assert wrong.startswith("refused") and wrong_state == "PAUSED"
    assert empty.startswith("refused") and empty_state == "PAUSED"
    assert right == "accepted"
    assert result["phase"] == Phase.WRITES_SWITCHED


def test_only_listed_approvers_are_accepted(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(Phase.READS_SWITCHED, approvals={"approvers": ["alice", "bob"], "timeout_seconds": 30})
    person = Approver("cutover", [{**GOOD, "approver": "mallory"}, {**GOOD, "approver": "bob"}])
    person.start()
    result = run_cutover(setup, approval_timeout_seconds=30)
    person.join(10)
    assert person.error is None
    assert person.outcomes[0][0].startswith("refused") and person.outcomes[0][1] == "PAUSED"
    assert person.outcomes[1][0] == "accepted"
    assert result["phase"] == Phase.WRITES_SWITCHED
    assert [a["actor"] for a in setup.store.audit_entries(setup.name, action="approval")] == ["bob"]


def test_time_out_leaves_the_migration_in_its_last_reversible_phase(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
) -> None:
    setup = make_migration(Phase.READS_SWITCHED)
    with pytest.raises(ApprovalError, match="no approval"):
        run_cutover(setup, approval_timeout_seconds=2)
    assert setup.store.phase(setup.name) is Phase.READS_SWITCHED
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY
    assert setup.store.audit_entries(setup.name, action="approval_timed_out")
    assert not setup.store.audit_entries(setup.name, action="approval")


def test_a_rejection_stops_before_the_switch(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(Phase.READS_SWITCHED)
    person = Approver("cutover", [{**GOOD, "decision": "reject", "reason": "error budget spent"}])
    person.start()
    with pytest.raises(ApprovalError, match="rejected by alice: error budget spent"):
        run_cutover(setup, approval_timeout_seconds=30)
    person.join(10)
    assert setup.store.phase(setup.name) is Phase.READS_SWITCHED
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY
    [refused] = setup.store.audit_entries(setup.name, action="approval_refused")
    assert "error budget spent" in refused["detail"]["why"]


def test_the_form_schema_pins_the_name_and_the_approvers() -> None:
    form = approval_form("orders-v2", ("alice", "bob"))
    schema = form.model_json_schema()
    assert schema["properties"]["confirm_name"]["pattern"] == "^\\s*orders\\-v2\\s*$"
    assert schema["properties"]["approver"]["pattern"] == "^\\s*(alice|bob|rollback)\\s*$"
    assert set(schema["required"]) >= {"approver", "confirm_name"}
    with pytest.raises(ValueError):
        form(approver="alice", confirm_name="orders-v3")
    with pytest.raises(ValueError):
        form(approver="carol", confirm_name="orders-v2")
    assert form(approver=" alice ", confirm_name="orders-v2 ").approver == " alice "  # trimmed by the check
    anyone = approval_form("orders-v2").model_json_schema()["properties"]["approver"]
    assert anyone["pattern"] == "\\S"  # not blank: whitespace alone is refused by the server
    with pytest.raises(ValueError):
        approval_form("orders-v2")(approver="   ", confirm_name="orders-v2")


def test_check_approval_refuses_what_a_lax_form_let_through() -> None:
    lax = Approval.model_construct(approver="  ", confirm_name="orders-v2", reason="", decision="approve")
    with pytest.raises(ApprovalError, match="approver is empty"):
        check_approval(lax, "orders-v2", (), "drop")
    wrong = Approval.model_construct(approver="carol", confirm_name="orders-v2", reason="", decision="approve")
    with pytest.raises(ApprovalError, match="not an allowed approver"):
        check_approval(wrong, "orders-v2", ("alice",), "drop")
    record = check_approval(Approval(approver=" alice ", confirm_name="orders-v2 "), "orders-v2", ("alice",), "drop")
    assert record.approver == "alice" and not record.automatic


def test_a_run_parameter_cannot_waive_named_approvers(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(Phase.READS_SWITCHED, approvals={"approvers": ["alice"], "timeout_seconds": 30})
    with pytest.raises(ApprovalError, match=r"auto_approve refused .* only `approvals.auto: true` in the spec"):
        run_cutover(setup, auto_approve=True)
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY
    assert not setup.store.audit_entries(setup.name, action="approval")

    allowed = make_migration(
        Phase.READS_SWITCHED, name="orders-drill", approvals={"approvers": ["alice"], "auto": True}
    )
    assert run_cutover(allowed, auto_approve=True)["phase"] == Phase.WRITES_SWITCHED
    [record] = allowed.store.audit_entries(allowed.name, action="approval")
    assert record["detail"]["automatic"] and "the spec sets approvals.auto" in record["detail"]["reason"]
    assert record["actor"].startswith("auto-approve (prefect:cutover/")


def test_an_answer_the_flow_refuses_is_asked_again(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    """The server takes 'rollback' as a name (a rollback's rejections use it), the flow refuses it as an
    approver: the run records the refusal and asks again instead of failing."""
    import time

    from prefect.flow_runs import resume_flow_run

    from .conftest import paused_run, run_state

    setup = make_migration(Phase.READS_SWITCHED)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run=run_cutover(setup, approval_timeout_seconds=60)))
    thread.start()
    run_id = paused_run("cutover")
    resume_flow_run(run_id, run_input={**GOOD, "approver": "rollback"})
    deadline = time.monotonic() + 30
    while run_state(run_id) != "PAUSED":  # refused, asked again
        assert time.monotonic() < deadline and thread.is_alive(), "the run did not ask again"
        time.sleep(0.2)
    # the new form opens with the refusal, as a sentence
    assert "Your last answer was refused:** approval of 'switch_writes' refused: 'rollback' is reserved" in (
        pause_description(run_id)
    )
    resume_flow_run(run_id, run_input=GOOD)
    thread.join(30)
    assert result["run"]["phase"] == Phase.WRITES_SWITCHED
    [refused] = setup.store.audit_entries(setup.name, action="approval_refused")
    assert "reserved for rollbacks" in refused["detail"]["why"] and refused["actor"] == "rollback"
    assert [a["actor"] for a in setup.store.audit_entries(setup.name, action="approval")] == ["alice"]


def pause_description(run_id: object) -> str:
    """The text the UI shows above a paused run's form: the flow run input its pause saved."""
    from prefect import get_client
    from prefect.input.actions import read_flow_run_input
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
        keyset = run.state.state_details.run_input_keyset  # type: ignore[union-attr]
        assert keyset is not None, "the run is not waiting for input"
        return str(await read_flow_run_input(keyset["description"], flow_run_id=run_id))  # type: ignore[arg-type]

    return str(run_coro_as_sync(read()))
