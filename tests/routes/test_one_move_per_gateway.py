"""Two route moves on one gateway: while the first waits mid-canary, the second is refused before it
changes anything, naming the first, even through another spelling of the directory (a symlink);
the gateway's config, the first move's flag and its access-log socket are untouched and the second
leaves no migration. Once the first is rolled back, the second runs. The route-move flow under
Prefect's test harness against a real haproxy and nginx.

Unrefused, the second move ran through (seen on the code before the claim): on haproxy a second
move of the same route retired the first's old upstream while the first waited at 50% (its flag
still said 50); on nginx a move of another route rendered the config without the first's route,
whose users all went back to the monolith; on both, the first run's access-log socket was unlinked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from flow_runs import Background, paused_run

from shiftover.control.store import open_store
from shiftover.errors import GatewayHeldError, StaleApprovalError
from shiftover.flags.store import get_flag
from shiftover.routes.asgi import route_flag_key
from shiftover.routes.drivers import attach_gateway
from shiftover.routes.haproxy import attach_haproxy
from shiftover.routes.spec import RouteMoveSpec
from shiftover.schema.claim import CLAIM

from .conftest import Load, route_spec

PAYMENTS = [{"name": "payments_reads", "prefix": "/payments", "methods": ["GET", "HEAD"]}]
NGINX = {"driver": "nginx"}


def write_spec(spec: RouteMoveSpec, tmp_path: Path) -> str:
    path = tmp_path / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return str(path)


def second_move(driver: str, old: Any, new: Any) -> tuple[RouteMoveSpec, str]:
    """haproxy: another move of the same route (a running haproxy serves its config's routes only);
    nginx: a move of another route (its attach re-renders the config). The spec and its route."""
    if driver == "haproxy":
        return route_spec(old, new, name="orders-again"), "orders_reads"
    return route_spec(old, new, name="payments-routes", routes=PAYMENTS, gateway=NGINX), "payments_reads"


@pytest.mark.parametrize("driver,spelling", [("haproxy", "same"), ("haproxy", "symlink"), ("nginx", "symlink")])
def test_a_second_move_on_a_held_gateway_is_refused_until_the_first_is_rolled_back(
    driver: str, spelling: str, prefect_harness: Any, upstreams: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from shiftover.flows.route_move import route_move, route_rollback

    old, new = upstreams
    extra = {"gateway": NGINX} if driver == "nginx" else {}
    first = route_spec(old, new, approvers=["alice"], **extra)  # waits at 50% for the switch's approval
    second, route = second_move(driver, old, new)
    first_path, second_path = write_spec(first, tmp_path), write_spec(second, tmp_path)
    gw, log = request.getfixturevalue("nginx_factory" if driver == "nginx" else "gateway_factory")(first)
    log.close()  # the flow binds the gateway's log socket itself
    control = f"sqlite:///{tmp_path}/control.db"
    there = gw.workdir
    if spelling == "symlink":
        there = tmp_path / "gateway-link"
        there.symlink_to(gw.workdir, target_is_directory=True)

    with Load(gw.port, paths=("/orders/1", "/payments/1")) as load:
        run = Background(lambda: route_move(first_path, control, str(gw.workdir), poll_interval_seconds=1))
        run.start()
        paused_run("route-move", timeout=60)
        store = open_store(control)
        config = gw.config_path.read_text()
        flag = get_flag(store.engine, route_flag_key(first.name, "orders_reads"))
        socket_inode = (gw.workdir / "log.sock").stat().st_ino

        held = r"held by the route move 'orders-routes' \(phase planned\)"
        with pytest.raises(GatewayHeldError, match=held):
            route_move(second_path, control, str(there), auto_approve=True)
        assert gw.config_path.read_text() == config
        if driver == "haproxy":  # its weights live in the runtime API too (nginx's in the config)
            assert attach_haproxy(first, gw.workdir).split("orders_reads").percent_new == 50
        assert get_flag(store.engine, route_flag_key(first.name, "orders_reads")) == flag
        assert get_flag(store.engine, route_flag_key(second.name, route)) is None
        assert (gw.workdir / "log.sock").stat().st_ino == socket_inode  # the first run's log still bound
        assert not store.has_migration(second.name)  # a refused first run leaves no migration

        route_rollback(first_path, control, str(gw.workdir), reason="the payments move goes first")
        run.join(30)
        assert isinstance(run.error, StaleApprovalError), run.error
        report = route_move(second_path, control, str(there), auto_approve=True)
    assert f"{route}.retire_old" in report["ran"]
    assert load.failures == []
    now = attach_gateway(second, gw.workdir).split(route)
    assert now.percent_new == 100 and not now.old_present
    [claim] = store.audit_entries(second.name, action=CLAIM)
    assert claim["detail"]["identities"] == [first_claim_identity(store, first.name)]  # one gateway, two spellings


def first_claim_identity(store: Any, name: str) -> Any:
    [claim] = store.audit_entries(name, action=CLAIM)
    [identity] = claim["detail"]["identities"]
    return identity


@pytest.mark.parametrize("driver", ["haproxy", "nginx"])
def test_a_rollback_through_a_symlinked_directory_restores_the_config_and_lets_the_gateway_go(
    driver: str, prefect_harness: Any, upstreams: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A move run and rolled back through a symlink to the gateway's directory: the config is
    byte for byte what it was before the move, and the claim is let go: another move through the
    real path takes the gateway (and, rolled back in turn, leaves the same bytes), then a third
    through the symlink runs to its end."""
    from shiftover.flows.route_move import route_move, route_rollback

    old, new = upstreams
    extra = {"gateway": NGINX} if driver == "nginx" else {}
    first = route_spec(old, new, approvers=["alice"], **extra)  # waits at 50% for the switch's approval
    second = route_spec(old, new, name="orders-again", approvers=["alice"], **extra)
    third = route_spec(old, new, name="orders-third", **extra)
    paths = {spec.name: write_spec(spec, tmp_path) for spec in (first, second, third)}
    gw, log = request.getfixturevalue("nginx_factory" if driver == "nginx" else "gateway_factory")(first)
    log.close()  # the flow binds the gateway's log socket itself
    before = gw.config_path.read_bytes()
    control = f"sqlite:///{tmp_path}/control.db"
    link = tmp_path / "gateway-link"
    link.symlink_to(gw.workdir, target_is_directory=True)

    def paused_then_rolled_back(spec: RouteMoveSpec, there: Path) -> None:
        run = Background(lambda: route_move(paths[spec.name], control, str(there), poll_interval_seconds=1))
        run.start()
        try:
            paused_run("route-move", timeout=60)
        except AssertionError:
            raise AssertionError(f"{spec.name} did not reach its approval: {run.error!r}") from None
        store = open_store(control)
        flag = get_flag(store.engine, route_flag_key(spec.name, "orders_reads"))
        assert flag is not None and flag.value == 50  # past its claim, mid-canary
        assert gw.config_path.read_bytes() != before  # the move changed the config
        route_rollback(paths[spec.name], control, str(there), reason="back")
        run.join(30)
        assert isinstance(run.error, StaleApprovalError), run.error
        assert gw.config_path.read_bytes() == before  # restored exactly

    with Load(gw.port) as load:
        paused_then_rolled_back(first, link)
        paused_then_rolled_back(second, gw.workdir)  # the first's claim was let go
        report = route_move(paths[third.name], control, str(link), auto_approve=True)
    assert "orders_reads.retire_old" in report["ran"]
    assert load.failures == []
    now = attach_gateway(third, gw.workdir).split("orders_reads")
    assert now.percent_new == 100 and not now.old_present
    store = open_store(control)
    identities = {first_claim_identity(store, spec.name)["gateway"] for spec in (first, second, third)}
    assert identities == {os.path.realpath(gw.workdir)}  # one gateway, two spellings
