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
from shiftover.control.lease import acquire_lease
from shiftover.control import schema
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
