"""A route move's approvals are a table move's: with ``approvals.keys`` in the route spec, the
route-move flow (on the one evaluator) lets the switch go ahead only on the named approver's
Ed25519 signature of this move, step, epoch, attempt and decision. An unsigned answer is refused by
the server's schema, a wrongly signed one by the flow (audited, asked again), and the route stays at
its last canary step until a good signature arrives; ``shiftover approve --key`` signs a route
run's question as it signs a table run's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from flow_runs import Background, paused_run, run_state

from shiftover.approvals import ApprovalRequest, pending_request_of
from shiftover.control.store import ControlStore, open_store
from shiftover.routes.haproxy import attach_haproxy
from shiftover.routes.spec import RouteMoveSpec
from shiftover.signing import Challenge, fingerprint, generate_key, load_private_key, sign_approval, write_private_key

from .conftest import Load, route_spec

SWITCH, RETIRE = "orders_reads.switch", "orders_reads.retire_old"


@pytest.fixture
def route_keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """alice's and bob's private key files and public keys."""
    made = {}
    for name in ("alice", "bob"):
        pem, public = generate_key()
        write_private_key(tmp_path / "approvers" / f"{name}.pem", pem)
        made[name] = (tmp_path / "approvers" / f"{name}.pem", public)
    return made


def signed(keys: dict[str, tuple[Path, str]], signer: str, challenge: Challenge, approver: str = "alice") -> str:
    return sign_approval(load_private_key(keys[signer][0]), challenge, "approve", approver)


def waiting(store: ControlStore, run_id: UUID, step: str, attempt: int, run: Background) -> ApprovalRequest:
    """The request the paused run waits on, once it asks ``step`` at ``attempt``."""
    deadline = time.monotonic() + 60
    while True:
        request = pending_request_of(store.engine, f"flow-run/{run_id}")
        if request is not None and (request.step, request.attempt) == (step, attempt) and run_state(run_id) == "PAUSED":
            return request
        assert time.monotonic() < deadline and run.is_alive(), (step, attempt, run.error)
        time.sleep(0.2)


def test_a_signed_route_switch_refuses_unsigned_and_wrongly_signed_answers_and_takes_a_good_one(
    prefect_harness: None, upstreams: Any, gateway_factory: Any, route_keys: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    from prefect.flow_runs import resume_flow_run
    from typer.testing import CliRunner

    from shiftover.cli import app
    from shiftover.flows.route_move import route_move

    old, new = upstreams
    approvals = {
        "approvers": ["alice", "bob"],
        "keys": {name: public for name, (_, public) in route_keys.items()},
        "timeout_seconds": 60,
    }
    spec: RouteMoveSpec = route_spec(
        old,
        new,
        approvals=approvals,
        canary={"steps": [50, 100], "soak_seconds": 1.0, "watch_seconds": 0.25, "min_requests": 5},
    )
    assert spec.approvals.public_keys is not None
    spec_path = tmp_path / "routes.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))  # approvals.keys, as written
    gw, log = gateway_factory(spec)
    log.close()  # the flow reads the gateway's log itself
    control_url = f"sqlite:///{tmp_path}/control.db"
    store = open_store(control_url)
    good = {"approver": "alice", "confirm_name": spec.name, "reason": "canary green"}
    with Load(gw.port) as load:
        run = Background(lambda: route_move(str(spec_path), control_url, str(gw.workdir), poll_interval_seconds=1))
        run.start()
        run_id = paused_run("route-move", timeout=60)
        request = waiting(store, run_id, SWITCH, 0, run)

        # unsigned: the server's schema refuses it, the run stays paused, nothing moved
        for unsigned in (good, {**good, "signature": ""}):
            with pytest.raises(Exception, match="signature"):
                resume_flow_run(run_id, run_input=unsigned)
            assert run_state(run_id) == "PAUSED"
        assert attach_haproxy(spec, gw.workdir).split("orders_reads").percent_new == 50

        # well-formed but wrong: bob's key claiming alice, then alice's signature of another step
        here = Challenge(spec.name, SWITCH, request.epoch, 0)
        resume_flow_run(run_id, run_input={**good, "signature": signed(route_keys, "bob", here)})
        waiting(store, run_id, SWITCH, 1, run)
        other_step = Challenge(spec.name, RETIRE, request.epoch, 1)
        resume_flow_run(run_id, run_input={**good, "signature": signed(route_keys, "alice", other_step)})
        waiting(store, run_id, SWITCH, 2, run)
        assert attach_haproxy(spec, gw.workdir).split("orders_reads").percent_new == 50
        refused = store.audit_entries(spec.name, "approval_refused")
        assert [r["actor"] for r in refused] == ["alice (unverified)"] * 2
        assert all("does not verify" in r["detail"]["why"] for r in refused)
        assert store.audit_entries(spec.name, "approval") == []

        # alice's signature of this question: the switch goes ahead, then the retirement asks again
        now = Challenge(spec.name, SWITCH, request.epoch, 2)
        resume_flow_run(run_id, run_input={**good, "signature": signed(route_keys, "alice", now)})
        waiting(store, run_id, RETIRE, 0, run)
        assert attach_haproxy(spec, gw.workdir).split("orders_reads").percent_new == 100
        # bob answers from a terminal: `shiftover approve` reads the question from the control store and signs it
        cli = CliRunner().invoke(
            app,
            [
                "approve",
                str(run_id),
                "--approver",
                "bob",
                "--confirm-name",
                spec.name,
                "--reason",
                "soaked",
                "--key",
                str(route_keys["bob"][0]),
                "--control-url",
                control_url,
            ],
        )
        assert cli.exit_code == 0, cli.output
        assert f"signed: approve of {RETIRE} in {spec.name}" in cli.output
        run.join(60)
    assert run.error is None, run.error
    assert run.result is not None and RETIRE in run.result["ran"]
    assert load.failures == []
    final = attach_haproxy(spec, gw.workdir).split("orders_reads")
    assert not final.old_present and final.percent_new == 100
    granted = store.audit_entries(spec.name, "approval")
    assert [(a["actor"], a["detail"]["step"], a["detail"]["signature_verified"]) for a in granted] == [
        ("alice", SWITCH, True),
        ("bob", RETIRE, True),
    ]
    assert granted[0]["detail"]["key_fingerprint"] == fingerprint(route_keys["alice"][1])
