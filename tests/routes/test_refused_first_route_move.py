"""A route move's first run refused before its first stage changed anything leaves the control store
as it found it: no migration row (no ``planned`` name in ``shiftover status``), no audit entries, no
lease. A refused re-run of a move earlier runs recorded keeps its row and trail, plus its claim of the
gateway. The route-move flow under Prefect's test harness, against a real haproxy where the refusal
needs one running."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from shiftover.control.lease import read_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.errors import GatewayError, SpecError, StageOrderError
from shiftover.flags.store import get_flag
from shiftover.routes.asgi import route_flag_key
from shiftover.routes.spec import RouteMoveSpec
from shiftover.schema.claim import CLAIM

from .conftest import route_spec


def spec_file(spec: RouteMoveSpec, tmp_path: Path) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return str(path)


def control_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/control.db"


def trail(store: ControlStore, name: str) -> tuple[Any, ...]:
    """Everything the control store holds of ``name``: its phase, its lease and epoch, its audit log."""
    return store.phase(name), read_lease(store.engine, name), store.audit_entries(name)


def test_a_first_route_move_with_no_gateway_running_leaves_no_migration(
    prefect_harness, upstreams, tmp_path: Path
) -> None:
    from shiftover.flows.route_move import route_move

    old, new = upstreams
    spec = route_spec(old, new)
    nowhere = tmp_path / "no-gateway"
    nowhere.mkdir()
    with pytest.raises(GatewayError, match="no gateway config there"):  # the refusal is what the user sees
        route_move(spec_file(spec, tmp_path), control_url(tmp_path), str(nowhere))
    store = open_store(control_url(tmp_path))
    assert not store.has_migration(spec.name)
    assert store.audit_entries(spec.name) == []
    assert store.migrations() == []


def test_a_first_route_move_waiting_for_its_table_leaves_no_migration_and_the_table_untouched(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    from shiftover.flows.route_move import route_move

    old, new = upstreams
    requires = {"migration": "orders", "phase": "reads_switched"}
    spec = route_spec(old, new, routes=[{"name": "orders_reads", "prefix": "/orders", "requires": requires}])
    gw, log = gateway_factory(spec)
    log.close()  # the flow binds the gateway's log socket itself
    store = open_store(control_url(tmp_path))
    store.register("orders", {"name": "orders"})  # the table move, still planned
    table = trail(store, "orders")
    with pytest.raises(StageOrderError, match="reads_switched"):
        route_move(spec_file(spec, tmp_path), control_url(tmp_path), str(gw.workdir))
    assert not store.has_migration(spec.name)
    assert store.audit_entries(spec.name) == []
    assert [m["name"] for m in store.migrations()] == ["orders"]
    assert trail(store, "orders") == table
    assert gw.split("orders_reads").percent_new == 0


def nothing_listening() -> SimpleNamespace:
    """An upstream address no server answers on (a port bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return SimpleNamespace(address=f"127.0.0.1:{s.getsockname()[1]}")


def test_a_first_route_move_to_an_upstream_nothing_answers_on_leaves_no_migration(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    from shiftover.flows.route_move import route_move

    old, _ = upstreams
    spec = route_spec(old, nothing_listening())
    gw, log = gateway_factory(spec)
    log.close()
    with pytest.raises(SpecError, match="nothing answers on") as caught:
        route_move(spec_file(spec, tmp_path), control_url(tmp_path), str(gw.workdir))
    assert caught.value.field == "new.address"
    store = open_store(control_url(tmp_path))
    assert not store.has_migration(spec.name)
    assert store.audit_entries(spec.name) == []
    assert store.migrations() == []
    assert get_flag(store.engine, route_flag_key(spec.name, "orders_reads")) is None  # refused before the flag
    assert gw.split("orders_reads").percent_new == 0


def test_a_refused_rerun_of_a_route_move_keeps_its_row_and_trail(
    prefect_harness, upstreams, gateway_factory, tmp_path: Path
) -> None:
    from shiftover.flows.route_move import route_move

    old, new = upstreams
    spec = route_spec(old, new)
    gw, log = gateway_factory(spec)
    log.close()
    store = open_store(control_url(tmp_path))
    store.register(spec.name, spec.model_dump(mode="json", by_alias=True))  # as an earlier run left it
    before = trail(store, spec.name)
    gw.stop()  # the gateway is not running any more
    with pytest.raises(GatewayError, match="no haproxy answers"):
        route_move(spec_file(spec, tmp_path), control_url(tmp_path), str(gw.workdir))
    phase, lease, entries = trail(store, spec.name)
    assert phase == before[0] and entries[: len(before[2])] == before[2]
    # all it added is its claim of the gateway directory, taken before it looked for the gateway
    assert [e["action"] for e in entries[len(before[2]) :]] == [CLAIM]
    assert lease.epoch == before[1].epoch + 1  # only this run's lease came and went
