"""Issue 16 §2: with approvers' keys in the spec, only a signature by the named approver's key, for
this migration, step, epoch, attempt and decision, lets the write switch go ahead. Spoofed, mis-signed
and replayed answers are refused (by the server's schema or by the flow) and the run stays paused
with nothing moved; a rollback's unsigned rejection still closes the pause."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner

from shiftover.approvals import ApprovalRequest, pending_request_of
from shiftover.errors import ApprovalError, StaleApprovalError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.phases import Phase
from shiftover.signing import Challenge, fingerprint, generate_key, load_private_key, sign_approval, write_private_key

from .conftest import Background, Setup, paused_run, run_state

pytestmark = pytest.mark.flows

GOOD = {"approver": "alice", "confirm_name": "orders-cut", "reason": "gates green"}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """alice's and bob's private key files and public keys."""
    made = {}
    for name in ("alice", "bob"):
        pem, public = generate_key()
        write_private_key(tmp_path / "approvers" / f"{name}.pem", pem)
        made[name] = (tmp_path / "approvers" / f"{name}.pem", public)
    return made


def signed_migration(make_migration, keys, phase: Phase = Phase.READS_SWITCHED) -> Setup:  # type: ignore[no-untyped-def]
    approvals = {
        "approvers": ["alice", "bob"],
        "keys": {name: public for name, (_, public) in keys.items()},
        "timeout_seconds": 60,
    }
    return make_migration(phase, approvals=approvals)  # type: ignore[no-any-return]


def start_cutover(setup: Setup) -> Background:
    from shiftover.flows.cutover import cutover

    run = Background(
        lambda: cutover(
            setup.spec_path, setup.control_url, soak_seconds=0, poll_interval_seconds=1, approval_timeout_seconds=60
        )
    )
    run.start()
    return run


def waiting_request(setup: Setup, run_id: UUID, attempt: int, run: Background) -> ApprovalRequest:
    """The request the paused run waits on, once it has asked for ``attempt`` (a refused answer moves it)."""
    deadline = time.monotonic() + 30
    while True:
        request = pending_request_of(setup.store.engine, f"flow-run/{run_id}")
        if request is not None and request.attempt == attempt and run_state(run_id) == "PAUSED":
            return request
        assert time.monotonic() < deadline and run.is_alive(), f"the run did not ask again (attempt {attempt})"
        time.sleep(0.2)


def nothing_moved(setup: Setup) -> None:
    assert setup.store.phase(setup.name) is Phase.READS_SWITCHED
    routing = read_routing(setup.store.engine, setup.name)
    assert (routing.writes, routing.reads_percent) == (WriteMode.DUAL_OLD_PRIMARY, 100)
    assert not setup.store.audit_entries(setup.name, action="approval")


def signature(keys, signer: str, challenge: Challenge, decision: str = "approve", approver: str = "alice") -> str:  # type: ignore[no-untyped-def]
    return sign_approval(load_private_key(keys[signer][0]), challenge, decision, approver)


def test_spoofed_mis_signed_and_replayed_answers_are_refused_then_a_signed_one_switches(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
    keys,  # type: ignore[no-untyped-def]
) -> None:
    from prefect.flow_runs import resume_flow_run

    setup = signed_migration(make_migration, keys)
    run = start_cutover(setup)
    run_id = paused_run("cutover")
    request = waiting_request(setup, run_id, 0, run)
    here = Challenge(setup.name, "switch_writes", request.epoch, 0)

    # the server's schema refuses an unsigned answer outright (a spoofed "alice"), and an unsigned rejection
    for unsigned in (GOOD, {**GOOD, "decision": "reject"}, {**GOOD, "signature": ""}):
        with pytest.raises(Exception, match="signature"):
            resume_flow_run(run_id, run_input=unsigned)
        assert run_state(run_id) == "PAUSED"
    nothing_moved(setup)

    # well-formed signatures the flow refuses: each is audited and the question is asked again
    wrong = [
        ("bob's key claiming alice", signature(keys, "bob", here)),
        (
            "replayed for another epoch",
            signature(keys, "alice", Challenge(setup.name, "switch_writes", here.epoch + 1, 1)),
        ),
        ("replayed for another step", signature(keys, "alice", Challenge(setup.name, "decommission", here.epoch, 2))),
        (
            "a rejection sent as an approval",
            signature(keys, "alice", Challenge(setup.name, "switch_writes", here.epoch, 3), "reject"),
        ),
    ]
    for attempt, (_what, signed) in enumerate(wrong):
        resume_flow_run(run_id, run_input={**GOOD, "signature": signed})
        waiting_request(setup, run_id, attempt + 1, run)  # refused, asked again: still paused
        nothing_moved(setup)
    refused = setup.store.audit_entries(setup.name, action="approval_refused")
    assert len(refused) == len(wrong)
    assert all(r["actor"] == "alice (unverified)" and "does not verify" in r["detail"]["why"] for r in refused)

    # the answer alice signed at attempt 0 is no good at attempt 4 either: each question has its own signature
    resume_flow_run(run_id, run_input={**GOOD, "signature": signature(keys, "alice", here)})
    waiting_request(setup, run_id, 5, run)
    nothing_moved(setup)

    current = Challenge(setup.name, "switch_writes", here.epoch, 5)
    resume_flow_run(run_id, run_input={**GOOD, "signature": signature(keys, "alice", current)})
    run.join(30)
    assert run.error is None, run.error
    assert run.result["phase"] == Phase.WRITES_SWITCHED  # type: ignore[index]
    routing = read_routing(setup.store.engine, setup.name)
    assert routing.writes is WriteMode.DUAL_NEW_PRIMARY
    [approval] = setup.store.audit_entries(setup.name, action="approval")
    assert approval["actor"] == "alice" and approval["detail"]["signature_verified"] is True
    assert approval["detail"]["key_fingerprint"] == fingerprint(keys["alice"][1])


def test_a_signed_rejection_stops_the_run(prefect_harness: None, make_migration, keys) -> None:  # type: ignore[no-untyped-def]
    from prefect.flow_runs import resume_flow_run

    setup = signed_migration(make_migration, keys)
    run = start_cutover(setup)
    run_id = paused_run("cutover")
    request = waiting_request(setup, run_id, 0, run)
    challenge = Challenge(setup.name, "switch_writes", request.epoch, 0)
    answer = {**GOOD, "approver": "bob", "decision": "reject", "reason": "error budget spent"}
    resume_flow_run(run_id, run_input={**answer, "signature": signature(keys, "bob", challenge, "reject", "bob")})
    run.join(30)
    assert isinstance(run.error, ApprovalError) and "rejected by bob (signature verified" in str(run.error)
    nothing_moved(setup)


def test_a_rollbacks_unsigned_rejection_still_closes_the_pause(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
    keys,  # type: ignore[no-untyped-def]
) -> None:
    from prefect.flow_runs import resume_flow_run

    from shiftover.flows.rollback import rollback

    setup = signed_migration(make_migration, keys)
    run = start_cutover(setup)
    run_id = paused_run("cutover")
    waiting_request(setup, run_id, 0, run)
    # the name 'rollback' can never approve, signed or not: the server refuses it
    for approve in ({**GOOD, "approver": "rollback"}, {**GOOD, "approver": "rollback", "decision": "approve"}):
        with pytest.raises(Exception, match="decision"):
            resume_flow_run(run_id, run_input=approve)
        assert run_state(run_id) == "PAUSED"
    rollback(setup.spec_path, setup.control_url, reason="drill while a signed approval waits")
    run.join(30)
    assert isinstance(run.error, StaleApprovalError), run.error  # woken by the rollback's rejection
    assert run_state(run_id) != "PAUSED"
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY
    assert not setup.store.audit_entries(setup.name, action="approval")


def test_shiftover_approve_signs_with_the_approvers_key(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
    keys,  # type: ignore[no-untyped-def]
) -> None:
    from shiftover.cli import app

    setup = signed_migration(make_migration, keys)
    run = start_cutover(setup)
    run_id = paused_run("cutover")
    waiting_request(setup, run_id, 0, run)
    runner = CliRunner()
    base = ["approve", str(run_id), "--approver", "alice", "--confirm-name", "orders-cut", "--reason", "gates green"]
    status = runner.invoke(app, ["status", setup.name, "--control-url", setup.control_url])
    assert "attempt 0" in status.output, status.output

    unsigned = runner.invoke(app, [*base, "--key-dir", str(setup.tmp / "no-keys")])
    assert unsigned.exit_code == 2 and "signature" in unsigned.output  # refused by the server
    wrong_store = runner.invoke(app, [*base, "--key", str(keys["alice"][0]), "--control-url", "sqlite:///"])
    assert wrong_store.exit_code == 2 and "no pending approval" in wrong_store.output
    key_dir = str(keys["alice"][0].parent)
    found = runner.invoke(app, [*base, "--key-dir", key_dir, "--control-url", "sqlite:///"])  # a key not asked for
    assert found.exit_code == 2 and "not signed: no pending approval" in found.output and "signature" in found.output
    wrong_name = runner.invoke(
        app, [*base[:5], "orders", "--key", str(keys["alice"][0]), "--control-url", setup.control_url]
    )
    assert wrong_name.exit_code == 2 and "nothing was signed" in wrong_name.output
    bobs_key = runner.invoke(app, [*base, "--key", str(keys["bob"][0]), "--control-url", setup.control_url])
    assert bobs_key.exit_code == 0  # the server cannot tell; the flow refuses it and asks again
    waiting_request(setup, run_id, 1, run)
    assert run_state(run_id) == "PAUSED"

    # the key found in the key dir (NAME.pem), the question read from the control store
    right = runner.invoke(app, [*base, "--key-dir", key_dir, "--control-url", setup.control_url])
    assert right.exit_code == 0, right.output
    assert "signed: approve of switch_writes in orders-cut at epoch" in right.output and "attempt 1" in right.output
    run.join(30)
    assert run.error is None and run.result["phase"] == Phase.WRITES_SWITCHED  # type: ignore[index]
    [approval] = setup.store.audit_entries(setup.name, action="approval")
    assert approval["detail"]["key_fingerprint"] == fingerprint(keys["alice"][1])
