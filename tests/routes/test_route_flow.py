"""The route-move flow under Prefect's test harness: a real haproxy the flow attaches to, and the
switch and retire approvals answered through Prefect's resume, with the same typed form."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from flow_runs import Background, paused_run, run_state

from shiftover.control.store import open_store
from shiftover.routes.haproxy import HAProxyGateway, attach_haproxy
from shiftover.routes.spec import RouteMoveSpec

from .conftest import Load, route_spec


def flow_setup(spec: RouteMoveSpec, gateway_factory: Any, tmp_path: Path) -> tuple[str, HAProxyGateway, str]:
    """The spec written where the flow reads it, a running gateway whose log the flow reads itself
    (the test's own reader closed), and a control store URL: ``(spec_path, gateway, control_url)``."""
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    gw, log = gateway_factory(spec)
    log.close()
    return str(path), gw, f"sqlite:///{tmp_path}/control.db"


def test_the_flow_pauses_for_each_approval_and_finishes_the_move(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    from prefect.flow_runs import resume_flow_run

    from shiftover.flows.route_move import route_move

    old, new = upstreams
    spec = route_spec(old, new, approvers=["alice"])
    spec_path, gw, control_url = flow_setup(spec, gateway_factory, tmp_path)
    with Load(gw.port) as load:
        run = Background(lambda: route_move(spec_path, control_url, str(gw.workdir), poll_interval_seconds=1))
        run.start()
        run_id = paused_run("route-move", timeout=60)
        assert gw.split("orders_reads").percent_new == 50  # waiting before the switch
        try:
            resume_flow_run(run_id, run_input={"approver": "mallory", "confirm_name": spec.name})
            refused = False
        except Exception:  # the server checks the form's schema: mallory is not on the list
            refused = True
        assert refused and run_state(run_id) == "PAUSED"
        resume_flow_run(run_id, run_input={"approver": "alice", "confirm_name": spec.name})
        deadline = time.monotonic() + 60
        while run_state(run_id) != "PAUSED" or gw.split("orders_reads").percent_new != 100:
            assert time.monotonic() < deadline and run.is_alive(), run.error
            time.sleep(0.2)
        resume_flow_run(run_id, run_input={"approver": "alice", "confirm_name": spec.name, "reason": "soaked"})
        run.join(60)
    assert run.error is None, run.error
    assert run.result is not None and "orders_reads.retire_old" in run.result["ran"]
    assert load.failures == []
    # the test's own handle on the gateway is stale (the flow changed it): read it back afresh
    now = attach_haproxy(spec, gw.workdir).split("orders_reads")
    assert not now.old_present and now.percent_new == 100
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:  # this run's: other tests' moves of these routes publish too
        splits = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["orders-routes-traffic-split"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    tables = [json.loads(str(a.data))[0] for a in splits]  # one per change (sorted by time, ties unordered)
    assert sorted(t["percent_new"] for t in tables) == [0, 10, 50, 100, 100]
    assert [t["old_upstream"] for t in tables].count("retired") == 1
    approvals = open_store(control_url).audit_entries(spec.name, "approval")  # as a table move's are
    assert [(a["actor"], a["detail"]["step"]) for a in approvals] == [
        ("alice", "orders_reads.switch"),
        ("alice", "orders_reads.retire_old"),
    ]


def test_a_second_run_is_refused_while_one_holds_the_move_and_a_rollback_revokes_it(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    import pytest

    from shiftover.control.lease import acquire_lease
    from shiftover.errors import LeaseHeldError, LeaseLostError
    from shiftover.flows.route_move import route_move, route_rollback

    old, new = upstreams
    spec = route_spec(old, new)
    spec_path, gw, control_url = flow_setup(spec, gateway_factory, tmp_path)
    store = open_store(control_url)
    store.register(spec.name, {})
    held = acquire_lease(store.engine, spec.name, "process/someone-else")
    try:
        with pytest.raises(LeaseHeldError):
            route_move(spec_path, control_url, str(gw.workdir))
        gw.set_split("orders_reads", 50)  # as if that other run were canarying
        # a rollback never waits for the lease: it revokes it
        flipped = route_rollback(spec_path, control_url, str(gw.workdir))
    finally:
        held.release()
    assert set(flipped) == {"orders_reads"} and flipped["orders_reads"] < 1.0
    assert gw.split("orders_reads").percent_new == 0
    with pytest.raises(LeaseLostError):
        held.ensure()  # the other run's next fenced step stops it


def test_a_rollback_while_the_switch_waits_for_approval_wakes_the_run_and_stops_it(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    from shiftover.approvals import pending_requests
    from shiftover.errors import StaleApprovalError
    from shiftover.flows.route_move import route_move, route_rollback

    old, new = upstreams
    spec = route_spec(old, new, approvers=["alice"])
    spec_path, gw, control_url = flow_setup(spec, gateway_factory, tmp_path)
    with Load(gw.port) as load:
        run = Background(lambda: route_move(spec_path, control_url, str(gw.workdir), poll_interval_seconds=1))
        run.start()
        run_id = paused_run("route-move", timeout=60)
        store = open_store(control_url)
        [request] = pending_requests(store.engine, spec.name)
        assert request.step == "orders_reads.switch"
        assert attach_haproxy(spec, gw.workdir).split("orders_reads").percent_new == 50
        flipped = route_rollback(spec_path, control_url, str(gw.workdir), reason="pager")
        run.join(30)
    assert flipped["orders_reads"] < 1.0
    assert isinstance(run.error, StaleApprovalError), run.error
    assert run_state(run_id) == "FAILED"
    assert attach_haproxy(spec, gw.workdir).split("orders_reads").percent_new == 0
    assert pending_requests(store.engine, spec.name) == []
    assert load.failures == []
