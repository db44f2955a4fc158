"""The route evaluator against an in-memory gateway (the ``Gateway`` seam), no haproxy: the move's
lease fences what it writes (an operator's rollback landing between a move's gateway flip and its
bookkeeping wins, the race placed exactly), and what a pass-through reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shiftover.control.lease import acquire_lease
from shiftover.control.store import ControlStore
from shiftover.errors import LeaseLostError
from shiftover.flags.store import get_flag
from shiftover.flows import routes as evaluator
from shiftover.flows import runners
from shiftover.flows.evaluate import Outcome, StageRunner
from shiftover.flows.routes import (
    RouteRun,
    completed,
    evaluate_routes,
    open_route_move,
    rollback_routes,
    run_pass_through,
    shift,
)
from shiftover.routes.asgi import route_flag_key
from shiftover.routes.gateway import Split
from shiftover.routes.spec import RouteMoveSpec, parse_route_spec
from shiftover.routes.stages import PassThroughStage, RouteStage
from shiftover.routes.traffic import AccessLog

MOVE = "orders-routes"


class MemoryGateway:
    """Weights in a dict; ``on_flip`` runs after a flip to a non-zero share (the racing rollback)."""

    url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.percent: dict[str, float] = {}
        self.on_flip: Any = None

    def set_split(self, route: str, percent_new: float) -> Split:
        self.percent[route] = percent_new
        if percent_new and self.on_flip is not None:
            hook, self.on_flip = self.on_flip, None
            hook()
        return Split(route, 100 - round(percent_new), round(percent_new))

    def split(self, route: str) -> Split:
        pct = round(self.percent.get(route, 0))
        return Split(route, 100 - pct, pct)

    def retire_old(self, route: str) -> Split:
        raise AssertionError("not reached")


def writes_route_spec() -> RouteMoveSpec:
    return parse_route_spec(
        {
            "kind": "route",
            "name": MOVE,
            "old": {"address": "127.0.0.1:8001"},
            "new": {"address": "127.0.0.1:8002"},
            "routes": [{"name": "orders_writes", "prefix": "/orders", "methods": ["POST"]}],  # nothing replayed
        }
    )


def held_run(control_store: ControlStore, tmp_path: Path) -> tuple[RouteRun, MemoryGateway, AccessLog]:
    spec, gateway = writes_route_spec(), MemoryGateway()
    control_store.register(MOVE, {})
    lease = acquire_lease(control_store.engine, MOVE, "process/the-move")
    log = AccessLog(tmp_path / "log.sock")
    return open_route_move(spec, control_store, gateway, log, approver=lambda s, m: "alice", lease=lease), gateway, log


def test_a_rollback_between_the_flip_and_the_flag_leaves_old_and_the_flag_at_zero(
    control_store: ControlStore, tmp_path: Path
) -> None:
    run, gateway, log = held_run(control_store, tmp_path)
    gateway.on_flip = lambda: rollback_routes(run.spec, control_store, gateway, "pager")
    try:
        with pytest.raises(LeaseLostError):
            shift(run, "orders_writes", 50, "orders_writes.canary_50pct")
    finally:
        log.close()
    assert gateway.split("orders_writes").percent_new == 0
    flag = get_flag(control_store.engine, route_flag_key(MOVE, "orders_writes"))
    assert flag is not None and flag.value == 0 and flag.updated_by == "operator"  # the move never wrote 50


def test_a_stage_a_rollback_overtook_is_not_recorded_done(
    control_store: ControlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, gateway, log = held_run(control_store, tmp_path)
    pass_through = runners.RUNNERS[PassThroughStage]  # the one evaluator's table of runners

    def overtaken(r: RouteRun, stage: RouteStage) -> Outcome:
        outcome = pass_through.run(r, stage)
        rollback_routes(r.spec, control_store, gateway, "pager")  # lands as the stage's work returns
        return outcome

    monkeypatch.setitem(runners.RUNNERS, PassThroughStage, StageRunner(overtaken))
    try:
        with pytest.raises(LeaseLostError):
            evaluate_routes(run)
    finally:
        log.close()
    assert completed(control_store, MOVE, "orders_writes") == set()
    assert control_store.audit_entries(MOVE, "route_stage") == []


def test_a_pass_through_of_unsafe_methods_replays_nothing_and_says_so(
    control_store: ControlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[Any] = []
    monkeypatch.setattr(evaluator, "publish_gate_results", lambda results, *where: published.extend(results))
    run, _, log = held_run(control_store, tmp_path)
    try:
        detail = run_pass_through(run, run.plan.for_route("orders_writes")[0])
    finally:
        log.close()
    assert detail == {"percent_new": 0, "samples": 0}  # a POST is never sent twice
    [gate] = published
    assert gate.passed and "not safe to send twice" in gate.summary, gate.summary


def test_one_runner_table_serves_every_kind_of_stage() -> None:
    """The evaluator reads one table: every table, schema and route stage type has exactly one runner."""
    from shiftover.plan import STAGE_TYPES
    from shiftover.routes.stages import ROUTE_STAGE_TYPES
    from shiftover.schema.plan import SCHEMA_STAGE_TYPES

    every = (*STAGE_TYPES, *SCHEMA_STAGE_TYPES, *ROUTE_STAGE_TYPES)
    assert len(set(every)) == len(every)
    assert set(runners.RUNNERS) == set(every)


def test_a_route_stage_is_done_when_audited_since_its_routes_last_rollback(
    control_store: ControlStore, tmp_path: Path
) -> None:
    """The route's ``done`` is the stage's answer against the audited state: a rollback of one route
    restarts that route only."""
    run, gateway, log = held_run(control_store, tmp_path)
    log.close()
    [pass_through, *_] = run.plan.for_route("orders_writes")
    run.complete(pass_through, "", {"percent_new": 0})
    control_store.audit(MOVE, "shiftover", "route_stage", {"route": "other", "stage": "other.pass_through"})
    assert pass_through.done(run.state()) and "other.pass_through" in run.state().completed
    rollback_routes(run.spec, control_store, gateway, "pager")
    assert not pass_through.done(run.state()) and "other.pass_through" in run.state().completed
