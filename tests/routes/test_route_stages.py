"""The route move's stages driving a real haproxy: old -> dark launch -> canary -> switch -> retire,
a mismatch caught before any user, an erroring canary rolled back within one gate interval."""

from __future__ import annotations

import time

import pytest

from shiftover.control.store import ControlStore
from shiftover.errors import ApprovalError, GateError, StageOrderError
from shiftover.flags.store import get_flag
from shiftover.flows.routes import completed, evaluate_routes, open_route_move
from shiftover.routes.asgi import route_flag_key
from shiftover.routes.plan import build_route_plan
from shiftover.routes.stages import RouteStage

from .conftest import Load, route_spec

MOVE = "orders-routes"


class Approvals:
    """The approver seam: records what it was asked and approves (or refuses) it."""

    def __init__(self, approve: bool = True) -> None:
        self.approve = approve
        self.asked: list[str] = []

    def __call__(self, stage: RouteStage, summary: str) -> str:
        self.asked.append(stage.name)
        assert MOVE in summary and stage.does in summary
        if not self.approve:
            raise ApprovalError(f"{stage.name} refused")
        return "alice"


def test_plan_lists_the_stages_in_order_with_their_undo(upstreams) -> None:
    old, new = upstreams
    plan = build_route_plan(route_spec(old, new))
    assert [s.name for s in plan.stages] == [
        "orders_reads.pass_through",
        "orders_reads.dark_launch",
        "orders_reads.canary_10pct",
        "orders_reads.canary_50pct",
        "orders_reads.switch",
        "orders_reads.retire_old",
    ]
    assert [s.name for s in plan.stages if s.approval] == ["orders_reads.switch", "orders_reads.retire_old"]
    assert [s.name for s in plan.stages if not s.reversible] == ["orders_reads.retire_old"]
    assert "IRREVERSIBLE" in plan.explain()


def test_a_route_moves_from_old_to_new_under_load_with_zero_failures(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    spec = route_spec(old, new)
    gw, log = gateway_factory(spec)
    approvals = Approvals()
    with Load(gw.port) as load:
        time.sleep(0.3)
        report = evaluate_routes(open_route_move(spec, control_store, gw, log, approvals))
        time.sleep(0.3)
    assert report["ran"] == [s.name for s in build_route_plan(spec).stages]
    assert approvals.asked == ["orders_reads.switch", "orders_reads.retire_old"]
    assert load.failures == [] and load.sent > 100
    assert report["stages"]["orders_reads.dark_launch"] == {"compared": 20, "mismatches": 0}
    assert report["stages"]["orders_reads.canary_10pct"]["replayed"] == 3  # the Load's three paths
    split = gw.split("orders_reads")
    assert not split.old_present and split.percent_new == 100
    assert completed(control_store, MOVE, "orders_reads") == set(report["ran"])
    assert get_flag(control_store.engine, route_flag_key(MOVE, "orders_reads")).value == 100  # type: ignore[union-attr]
    # a re-run has nothing left to do
    again = evaluate_routes(open_route_move(spec, control_store, gw, log, approvals))
    assert again["ran"] == [] and len(again["skipped"]) == 6


def test_dark_launch_catches_a_wrong_field_before_any_user_reaches_new(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.wrong_fraction = 0.2
    spec = route_spec(old, new, dark_launch_samples=60)
    gw, log = gateway_factory(spec)
    served_by_new = new.requests
    with pytest.raises(GateError) as caught:
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals()))
    assert caught.value.gate == "mismatch_rate"
    rows = caught.value.report.rows
    assert rows and {r["field"] for r in rows} == {"total"}  # request_id differs every call: noise, not reported
    assert "request_id" in rows[0]["noise_fields"]
    assert gw.split("orders_reads").percent_new == 0
    assert new.requests - served_by_new == 60  # only the comparator's replays, no user request
    assert completed(control_store, MOVE, "orders_reads") == {"orders_reads.pass_through"}


def test_a_new_service_erroring_under_load_is_rolled_back_within_one_gate_interval(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.error_fraction = 0.5  # user requests only: the dark launch's replays carry no user
    spec = route_spec(
        old, new, canary={"steps": [50, 100], "soak_seconds": 5, "watch_seconds": 0.25, "min_requests": 5}
    )
    gw, log = gateway_factory(spec)
    run = open_route_move(spec, control_store, gw, log, Approvals())
    with Load(gw.port) as load:
        time.sleep(0.3)
        with pytest.raises(GateError) as caught:
            evaluate_routes(run)
        sent_at_flip = load.sent
        new_at_flip = load.sides.get("new", 0)
        time.sleep(0.5)
    assert caught.value.gate == "error_rate"
    assert gw.split("orders_reads").percent_new == 0
    rollback = control_store.audit_entries(MOVE, "route_rollback")
    assert len(rollback) == 1 and rollback[0]["detail"]["seconds"] < 1.0
    canary = control_store.audit_entries(MOVE, "route_stage")
    assert [e["detail"]["stage"] for e in canary] == ["orders_reads.pass_through", "orders_reads.dark_launch"]
    step_started = canary[-1]["at"]
    judged_after = (rollback[0]["at"] - step_started).total_seconds()
    assert judged_after < 5 * 0.25 + 1.0, judged_after  # within a few gate intervals, not the 5 s soak
    assert new_at_flip > 0 and load.sent > sent_at_flip + 20
    assert load.sides.get("new", 0) == new_at_flip  # after the flip, every request on old
    assert completed(control_store, MOVE, "orders_reads") == set()  # the next run starts the route again
    assert get_flag(control_store.engine, route_flag_key(MOVE, "orders_reads")).value == 0  # type: ignore[union-attr]


def test_a_refused_switch_leaves_the_route_at_its_last_canary_step(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    spec = route_spec(old, new)
    gw, log = gateway_factory(spec)
    with Load(gw.port), pytest.raises(ApprovalError):
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals(approve=False)))
    assert gw.split("orders_reads").percent_new == 50
    assert "orders_reads.canary_50pct" in completed(control_store, MOVE, "orders_reads")


def test_a_route_waits_for_its_table_migration(upstreams, gateway_factory, control_store: ControlStore) -> None:
    old, new = upstreams
    control_store.register("orders", {"name": "orders"})
    spec = route_spec(
        old,
        new,
        routes=[
            {
                "name": "orders_reads",
                "prefix": "/orders",
                "requires": {"migration": "orders", "phase": "reads_switched"},
            }
        ],
    )
    gw, log = gateway_factory(spec)
    with pytest.raises(StageOrderError, match="reads_switched"):
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals()))
    assert gw.split("orders_reads").percent_new == 0


def test_a_slow_new_service_fails_the_latency_gate_and_is_rolled_back(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.delay_s = 0.06  # 60 ms against about 1 ms: six times the 10 ms floor
    canary = {"steps": [50, 100], "soak_seconds": 3, "watch_seconds": 0.25, "min_requests": 5, "latency_floor_ms": 10}
    spec = route_spec(old, new, canary=canary)
    gw, log = gateway_factory(spec)
    with Load(gw.port) as load, pytest.raises(GateError) as caught:
        time.sleep(0.3)
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals()))
    assert caught.value.gate == "latency_ratio"
    assert caught.value.report.metrics["ratio"] > 2
    assert gw.split("orders_reads").percent_new == 0
    assert load.failures == []


def test_a_wrong_field_in_2_percent_of_answers_never_reaches_a_1_percent_canary(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.wrong_fraction = 0.02
    # 400 replays miss a 2 % fault with probability 0.98**400 (about 3e-4)
    spec = route_spec(
        old, new, dark_launch_samples=400, canary={"steps": [1, 100], "soak_seconds": 1, "min_requests": 1}
    )
    gw, log = gateway_factory(spec)
    with Load(gw.port) as load, pytest.raises(GateError) as caught:
        time.sleep(0.3)
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals()))
    assert caught.value.gate == "mismatch_rate"
    assert 0 < caught.value.report.metrics["mismatches"] < 40
    assert load.sides.get("new", 0) == 0 and load.failures == []  # no user ever reached new
    assert gw.split("orders_reads").percent_new == 0


def test_an_operator_rollback_stops_a_running_move_and_flips_the_route_back_at_once(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    import threading

    from shiftover.control.lease import acquire_lease
    from shiftover.errors import LeaseLostError
    from shiftover.flows.routes import rollback_routes

    old, new = upstreams
    spec = route_spec(
        old, new, canary={"steps": [50, 100], "soak_seconds": 30, "watch_seconds": 0.25, "min_requests": 5}
    )
    gw, log = gateway_factory(spec)
    control_store.register(MOVE, {})
    lease = acquire_lease(control_store.engine, MOVE, "process/the-move")
    run = open_route_move(spec, control_store, gw, log, Approvals(), lease=lease)
    outcome: list[BaseException] = []

    def move() -> None:
        try:
            evaluate_routes(run)
        except BaseException as exc:
            outcome.append(exc)

    with Load(gw.port) as load:
        thread = threading.Thread(target=move, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while gw.split("orders_reads").percent_new != 50:  # the move is soaking at 50 %
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.05)
        time.sleep(0.5)
        flipped = rollback_routes(spec, control_store, gw, "pager: checkout errors")
        new_at_flip = load.sides.get("new", 0)
        thread.join(5)
        time.sleep(0.5)
    assert not thread.is_alive() and isinstance(outcome[0], LeaseLostError)
    assert flipped["orders_reads"] < 1.0
    assert gw.split("orders_reads").percent_new == 0
    assert new_at_flip > 0 and load.sides.get("new", 0) <= new_at_flip + 2  # at most requests in flight
    assert load.failures == []
    assert completed(control_store, MOVE, "orders_reads") == set()


def test_a_new_service_going_wrong_during_a_canary_step_is_caught_by_its_replays(
    upstreams, gateway_factory, control_store: ControlStore
) -> None:
    import threading

    old, new = upstreams
    spec = route_spec(old, new, canary={"steps": [50, 100], "soak_seconds": 1, "min_requests": 5})
    gw, log = gateway_factory(spec)
    stop = threading.Event()

    def break_new_at_50() -> None:  # the dark launch passed; users at 50 % then get wrong totals
        while not stop.is_set():
            if gw.split("orders_reads").percent_new == 50:
                new.behaviour.wrong_fraction = 1.0
                return
            time.sleep(0.02)

    breaker = threading.Thread(target=break_new_at_50, daemon=True)
    breaker.start()
    with Load(gw.port, paths=tuple(f"/orders/{i}" for i in range(30))), pytest.raises(GateError) as caught:
        time.sleep(0.3)
        evaluate_routes(open_route_move(spec, control_store, gw, log, Approvals()))
    stop.set()
    assert caught.value.gate == "mismatch_rate"
    assert {r["field"] for r in caught.value.report.rows} == {"total"}
    assert gw.split("orders_reads").percent_new == 0
    assert completed(control_store, MOVE, "orders_reads") == set()
