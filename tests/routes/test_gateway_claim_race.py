"""Two route moves claiming one gateway at the same instant: each in its own thread with its own
engine on a real control store (SQLite, PostgreSQL), registered and leased as the route-move flow
does, then released together by a barrier into the flow's claim (``claim_gateway`` inside
``forgotten_if_refused``), one through the gateway's directory and one through a symlink to it.
Exactly one wins; the other is refused naming the winner and leaves no migration and no audit entry;
the store holds the winner's one claim. Several rounds, each on a fresh store and gateway directory,
so that a race has a chance to show."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.connect import normalise_url
from shiftover.control import schema
from shiftover.control.lease import acquire_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.engines import find_dialect
from shiftover.errors import GatewayHeldError
from shiftover.flows.context import forgotten_if_refused
from shiftover.phases import Phase
from shiftover.routes.claim import claim_gateway
from shiftover.routes.spec import RouteMoveSpec
from shiftover.schema.claim import CLAIM

from .conftest import route_spec

ROUNDS = 5
OLD, NEW = SimpleNamespace(address="127.0.0.1:9"), SimpleNamespace(address="127.0.0.1:10")  # never called


def own_store(url: str) -> ControlStore:
    """A store on an engine of its own (not the process's cached one): another client."""
    parsed = normalise_url(url)
    dialect = find_dialect(parsed)
    assert dialect is not None
    return ControlStore(dialect.create_engine(parsed))


def contend(url: str, spec: RouteMoveSpec, workdir: Path, start: threading.Barrier) -> Any:
    """The route-move flow's steps up to its claim, released by ``start``; None when it won, else
    what it raised."""
    store = own_store(url)
    try:
        registration = store.enroll(spec.name, spec.model_dump(mode="json", by_alias=True), "route-move")
        lease = acquire_lease(store.engine, spec.name, f"process/{spec.name}")
        try:
            start.wait()
            with forgotten_if_refused(store, spec.name, lease, registration.created, evidence=(CLAIM,)):
                claim_gateway(store, spec, "route-move", workdir, lease)
            return None
        except Exception as exc:
            return exc
        finally:
            lease.release()
    finally:
        store.engine.dispose()


def race(url: str, gateway: Path, link: Path, round_: int) -> tuple[dict[str, Any], list[str]]:
    moves = [
        route_spec(OLD, NEW, name=f"orders-{round_}"),
        route_spec(OLD, NEW, name=f"payments-{round_}"),
    ]
    start = threading.Barrier(2, timeout=60)
    outcomes: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda s=spec, w=where: outcomes.__setitem__(s.name, contend(url, s, w, start)))
        for spec, where in zip(moves, (gateway, link), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return outcomes, [m.name for m in moves]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_moves_claiming_one_gateway_at_once_exactly_one_wins(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    make_pg: Callable[[], str] | None = request.getfixturevalue("pg_database") if kind == "postgres" else None
    for round_ in range(ROUNDS):
        url = make_pg() if make_pg else f"sqlite:///{tmp_path}/control{round_}.db"
        open_store(url)  # its schema created first: the race is the claim's, not the first upgrade's
        gateway = tmp_path / f"gateway{round_}"
        gateway.mkdir()
        link = tmp_path / f"gateway{round_}-link"
        link.symlink_to(gateway, target_is_directory=True)

        outcomes, names = race(url, gateway, link, round_)

        won = [name for name in names if outcomes[name] is None]
        assert len(won) == 1, f"round {round_}: {outcomes}"
        [winner], [loser] = won, [name for name in names if name != won[0]]
        refusal = outcomes[loser]
        assert isinstance(refusal, GatewayHeldError), refusal
        assert refusal.holding == ((winner, Phase.PLANNED),)
        assert f"held by the route move '{winner}'" in str(refusal)

        reader = own_store(url)
        m, a = schema.migrations, schema.audit_log
        try:
            with reader.engine.connect() as conn:
                rows = conn.execute(sa.select(m.c.name)).scalars().all()
                claims = conn.execute(sa.select(a.c.migration, a.c.detail).where(a.c.action == CLAIM)).all()
                loser_entries = conn.execute(sa.select(sa.func.count()).where(a.c.migration == loser)).scalar()
        finally:
            reader.engine.dispose()
        assert rows == [winner]  # the refused first run left no migration row
        assert loser_entries == 0  # nor any audit entry of its own
        [(holder, detail)] = claims  # the winner's claim, and only it
        assert holder == winner
        real = os.path.realpath(gateway)
        assert detail["identities"] == [{"host": socket.gethostname(), "gateway": real}]


def test_two_route_move_flows_released_at_their_claim_together_on_one_nginx(
    prefect_harness: Any,
    upstreams: Any,
    nginx_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same race through the route-move flow against a real nginx, once: two moves of different
    routes (each would render the config from its own routes alone), both held at the claim and let
    go together, one through a symlink. The winner runs through; the gateway's config, its splits,
    the flags and the traffic are the winner's alone; the loser leaves no migration."""
    import yaml
    from flow_runs import Background

    import shiftover.routes.claim as claim_module
    from shiftover.flags.store import get_flag
    from shiftover.flows.route_move import route_move
    from shiftover.routes.asgi import route_flag_key
    from shiftover.routes.drivers import attach_gateway
    from shiftover.routes.nginx import read_state

    from .conftest import Load, side_of

    old, new = upstreams
    nginx = {"driver": "nginx"}
    payments = [{"name": "payments_reads", "prefix": "/payments", "methods": ["GET", "HEAD"]}]
    moves = {
        "orders-routes": (route_spec(old, new, gateway=nginx), "orders_reads", "/orders/1"),
        "payments-routes": (
            route_spec(old, new, name="payments-routes", routes=payments, gateway=nginx),
            "payments_reads",
            "/payments/1",
        ),
    }
    paths = {}
    for name, (spec, _, _) in moves.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    gw, log = nginx_factory(moves["orders-routes"][0])
    log.close()  # each flow binds the gateway's log socket itself
    link = tmp_path / "gateway-link"
    link.symlink_to(gw.workdir, target_is_directory=True)
    control = f"sqlite:///{tmp_path}/control.db"
    open_store(control)

    start = threading.Barrier(2, timeout=120)
    claim = claim_module.claim_gateway

    def at_once(*args: Any, **kwargs: Any) -> Any:
        start.wait()  # both runs are at their claim: let them go together
        return claim(*args, **kwargs)

    monkeypatch.setattr(claim_module, "claim_gateway", at_once)
    with Load(gw.port, paths=("/orders/1", "/payments/1")) as load:
        runs = {
            name: Background(lambda n=name, w=where: route_move(str(paths[n]), control, str(w), auto_approve=True))
            for name, where in zip(moves, (gw.workdir, link), strict=True)
        }
        for run in runs.values():
            run.start()
        for run in runs.values():
            run.join(240)
    assert not any(run.is_alive() for run in runs.values())
    assert load.failures == []

    won = [name for name, run in runs.items() if run.error is None]
    assert len(won) == 1, {name: run.error for name, run in runs.items()}
    [winner] = won
    [loser] = [name for name in moves if name != winner]
    winner_spec, winner_route, winner_path = moves[winner]
    _, loser_route, loser_path = moves[loser]
    refusal = runs[loser].error
    assert isinstance(refusal, GatewayHeldError), refusal
    assert f"held by the route move '{winner}'" in str(refusal)
    report = runs[winner].result
    assert report is not None and f"{winner_route}.retire_old" in report["ran"]

    store = open_store(control)
    assert not store.has_migration(loser) and store.audit_entries(loser) == []
    assert store.has_migration(winner)
    assert get_flag(store.engine, route_flag_key(loser, loser_route)) is None
    flag = get_flag(store.engine, route_flag_key(winner, winner_route))
    assert flag is not None and flag.value == 100
    state = read_state(gw.config_path)
    assert set(state["routes"]) == {winner_route}  # rendered from the winner's routes alone
    split = attach_gateway(winner_spec, gw.workdir).split(winner_route)
    assert split.percent_new == 100 and not split.old_present
    assert side_of(gw, "user-1", winner_path) == "new"
    assert side_of(gw, "user-1", loser_path) == "old"  # the loser's route never moved
