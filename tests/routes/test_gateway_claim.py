"""When a route move lets its gateway go, read from its audit trail alone (no gateway): each route
of its last claim rolled back since that claim with no stage done after; a finished route keeps it."""

from __future__ import annotations

from pathlib import Path

from shiftover.control.store import open_store
from shiftover.routes.claim import gateway_identity, route_move_ended
from shiftover.schema.claim import CLAIM, changes_holding


def test_a_move_holds_its_gateway_until_every_route_is_rolled_back(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    store.register("m", {})
    identity = gateway_identity(tmp_path)
    routes = ["a", "b"]

    def stage(route: str, name: str) -> None:
        store.audit("m", "route-move", "route_stage", {"route": route, "stage": f"{route}.{name}"})

    def rollback(route: str) -> None:
        store.audit("m", "route-rollback", "route_rollback", {"route": route, "reason": "test"})

    store.audit("m", "route-move", CLAIM, {"identities": [identity], "routes": routes})
    assert not route_move_ended(store, "m")  # claimed, nothing done yet
    stage("a", "pass_through")
    rollback("a")
    assert not route_move_ended(store, "m")  # b still holds it
    rollback("b")
    assert route_move_ended(store, "m")
    assert changes_holding(store, identity, besides="other") == [("m", store.phase("m"))]  # by phase alone

    store.audit("m", "route-move", CLAIM, {"identities": [identity], "routes": routes})  # a re-run
    assert not route_move_ended(store, "m")  # the rollbacks came before this claim
    for name in ("pass_through", "retire_old"):
        stage("a", name)
    rollback("b")
    assert not route_move_ended(store, "m")  # a finished: the gateway serves it from the new upstream
    for route in ("a", "b"):
        stage(route, "retire_old")
    assert not route_move_ended(store, "m")  # both finished: still held, for the same reason
    rollback("a")
    rollback("b")
    assert route_move_ended(store, "m")


def test_two_spellings_of_one_directory_are_one_gateway(tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "gw", target_is_directory=True)
    assert gateway_identity(tmp_path / "link") == gateway_identity(tmp_path / "gw" / ".." / "gw")
