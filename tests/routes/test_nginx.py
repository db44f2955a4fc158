"""The nginx driver on a real nginx (scripts/install-gateway): splits by re-render and graceful
reload, stable bucketing, rollback under load, a full route move under load, and the dark launch
judging live traffic that nginx mirrors to the comparator."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from shiftover.control.store import ControlStore
from shiftover.errors import GateError, GatewayError, SpecError
from shiftover.flows.routes import completed, evaluate_routes, open_route_move
from shiftover.routes.drivers import attach_gateway
from shiftover.routes.mirror import MirrorComparator
from shiftover.routes.nginx import NginxGateway, title, worker_pids
from shiftover.routes.plan import build_route_plan
from shiftover.routes.spec import parse_route_spec
from shiftover.routes.stages import RouteStage

from .conftest import Load, get, route_spec, side_of

MOVE = "orders-routes"
NGINX = {"driver": "nginx"}


def approve(stage: RouteStage, summary: str) -> str:
    return "alice"


def test_the_spec_picks_the_driver_and_names_the_field_at_fault(upstreams) -> None:
    old, new = upstreams
    assert route_spec(old, new).gateway.driver == "haproxy"  # the default
    assert route_spec(old, new, gateway=NGINX).gateway.driver == "nginx"
    with pytest.raises(SpecError, match=r"gateway\.driver") as caught:
        route_spec(old, new, gateway={"driver": "envoy"})
    assert "envoy" in str(caught.value)
    with pytest.raises(SpecError, match="key_cookie"):
        route_spec(old, new, gateway={"key_cookie": "uid"})  # haproxy buckets by the header only
    nested = [
        {"name": "orders", "prefix": "/orders", "methods": ["GET"]},
        {"name": "lines", "prefix": "/orders/lines", "methods": ["POST"]},
    ]
    data = {
        "kind": "route",
        "name": "m",
        "old": {"address": old.address},
        "new": {"address": new.address},
        "routes": nested,
    }
    parse_route_spec(data)  # haproxy takes the first route that matches: fine
    with pytest.raises(SpecError, match="share a prefix"):
        parse_route_spec({**data, "gateway": NGINX})


def test_splits_reload_nginx_and_only_the_route_and_its_methods_move(upstreams, nginx_factory) -> None:
    old, new = upstreams
    gw, _ = nginx_factory(route_spec(old, new, gateway=NGINX))
    assert {side_of(gw, f"u{i}") for i in range(30)} == {"old"}
    assert gw.process is not None
    workers = set(worker_pids(gw.process.pid))
    split = gw.set_split("orders_reads", 100)
    assert (split.old_weight, split.new_weight) == (0, 100)
    assert gw.process.poll() is None  # the same master
    now = set(worker_pids(gw.process.pid))
    assert now - workers  # a new worker, and the old one gone or no longer accepting
    assert all("shutting down" in title(p) or not title(p) for p in now & workers)  # "": exited
    assert {side_of(gw, f"u{i}") for i in range(30)} == {"new"}
    assert side_of(gw, "u1", "/orders") == "new"  # the prefix itself
    assert side_of(gw, "u1", "/customers/1") == "old"  # another path stays on the monolith
    assert side_of(gw, "u1", "/ordersx") == "old"  # a prefix is a path segment
    assert get(gw, "/orders/1", "u1", method="POST")[1]["side"] == "old"  # a method not moved
    assert "* new;" in gw.config_path.read_text()  # a restart would keep the split


def test_a_user_keeps_its_side_at_a_share_and_as_the_share_rises(upstreams, nginx_factory) -> None:
    old, new = upstreams
    gw, _ = nginx_factory(route_spec(old, new, gateway=NGINX))
    users = [f"user-{i}" for i in range(300)]
    on_new: set[str] = set()
    for pct in (10, 20, 50, 90):
        gw.set_split("orders_reads", pct)
        sides = {u: side_of(gw, u) for u in users}
        assert {u: side_of(gw, u, f"/orders/{u}") for u in users} == sides  # same user, any path: same side
        now_new = {u for u, s in sides.items() if s == "new"}
        assert on_new <= now_new, f"{len(on_new - now_new)} user(s) flipped back to old at {pct}%"
        assert abs(len(now_new) / len(users) - pct / 100) < 0.1, (pct, len(now_new))
        on_new = now_new


def test_a_cookie_buckets_a_user_without_the_header(upstreams, nginx_factory) -> None:
    old, new = upstreams
    gw, _ = nginx_factory(route_spec(old, new, gateway={"driver": "nginx", "key_cookie": "uid"}))
    gw.set_split("orders_reads", 50)

    def by_cookie(user: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        conn.request("GET", "/orders/1", headers={"Cookie": f"uid={user}"})
        side = str(json.loads(conn.getresponse().read())["side"])
        conn.close()
        return side

    users = [f"user-{i}" for i in range(100)]
    assert [by_cookie(u) for u in users] == [side_of(gw, u) for u in users]  # same key, same bucket
    assert {by_cookie(u) for u in users} == {"old", "new"}


def test_rollback_under_load_takes_effect_in_under_a_second_with_zero_failures(upstreams, nginx_factory) -> None:
    old, new = upstreams
    gw, log = nginx_factory(route_spec(old, new, gateway=NGINX))
    gw.set_split("orders_reads", 100)
    with Load(gw.port) as load:
        time.sleep(0.3)
        assert load.sides.get("new", 0) > 0
        flipped = time.perf_counter()
        gw.set_split("orders_reads", 0)
        returned = time.perf_counter() - flipped
        probes = [side_of(gw, f"r{i}") for i in range(50)]
        elapsed = time.perf_counter() - flipped
        at = time.monotonic()
        time.sleep(0.5)
    print(
        f"rollback: set_split returned after {returned * 1000:.1f} ms, 50 probes on old after {elapsed * 1000:.1f} ms"
    )
    assert probes == ["old"] * 50
    assert elapsed < 1.0
    after = log.since(at, "route_orders_reads")
    assert after and {h.server for h in after} == {"old"}  # the load's requests after it too
    assert load.failures == [] and load.sent > 100


def test_twenty_switches_under_load_fail_no_request(upstreams, nginx_factory) -> None:
    old, new = upstreams
    gw, _ = nginx_factory(route_spec(old, new, gateway=NGINX))
    with Load(gw.port) as load:
        time.sleep(0.2)
        for i in range(20):
            gw.set_split("orders_reads", 100 if i % 2 == 0 else 0)
            time.sleep(0.05)
        time.sleep(0.2)
    assert load.failures == []
    assert load.sides.get("old", 0) > 0 and load.sides.get("new", 0) > 0


def test_a_route_moves_from_old_to_new_under_load_through_nginx_with_zero_failures(
    upstreams, nginx_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    spec = route_spec(
        old,
        new,
        gateway=NGINX,
        # 5 % first: with the load's 200 users, a 1 % bucket holds none of them 13 % of the time
        # (0.99 ** 200), and an unjudged step fails its gate, as it should
        canary={"steps": [5, 25, 50, 100], "soak_seconds": 1.0, "watch_seconds": 0.25, "min_requests": 1},
    )
    gw, log = nginx_factory(spec)
    with Load(gw.port) as load:
        time.sleep(0.3)
        report = evaluate_routes(open_route_move(spec, control_store, gw, log, approve))
        time.sleep(0.3)
    assert report["ran"] == [s.name for s in build_route_plan(spec).stages]
    dark = report["stages"]["orders_reads.dark_launch"]
    assert dark["compared"] == 20 and dark["mismatches"] == 0 and dark["mirrored"] >= 20
    assert load.failures == [] and load.sent > 100
    split = gw.split("orders_reads")
    assert not split.old_present and split.percent_new == 100
    assert {side_of(gw, f"u{i}") for i in range(20)} == {"new"}
    assert side_of(gw, "u1", "/customers/1") == "old"  # the monolith still serves the rest
    assert completed(control_store, MOVE, "orders_reads") == set(report["ran"])


def test_dark_launch_catches_a_two_percent_wrong_field_from_mirrored_live_traffic(
    upstreams, nginx_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.wrong_fraction = 0.02
    spec = route_spec(
        old, new, gateway=NGINX, dark_launch_samples=400, canary={"steps": [1, 10, 100], "soak_seconds": 1.0}
    )
    gw, log = nginx_factory(spec)
    with Load(gw.port, paths=tuple(f"/orders/{i}" for i in range(40))) as load:
        time.sleep(0.2)
        with pytest.raises(GateError) as caught:
            evaluate_routes(open_route_move(spec, control_store, gw, log, approve))
        time.sleep(0.2)
    assert caught.value.gate == "mismatch_rate"
    metrics = caught.value.report.metrics
    assert metrics["compared"] == 400 and 0 < metrics["mismatches"] < 40  # about 2 %, at least one
    rows = caught.value.report.rows
    assert rows and {r["field"] for r in rows} == {"total"}  # request_id differs on every call: noise
    assert "request_id" in rows[0]["noise_fields"]
    # no user ever reached new: the 1 % canary never ran, and the gateway logged no new-side request
    assert completed(control_store, MOVE, "orders_reads") == {"orders_reads.pass_through"}
    assert gw.split("orders_reads").percent_new == 0
    assert load.sides.get("new", 0) == 0 and load.failures == []
    assert not [h for h in log.since(0.0) if h.server == "new"]
    assert "mirror /_shiftover_mirror" not in gw.config_path.read_text()  # the mirror stopped with the stage


def test_writes_are_never_mirrored_and_a_dead_comparator_fails_no_request(upstreams, nginx_factory) -> None:
    old, new = upstreams
    spec = route_spec(
        old, new, gateway=NGINX, routes=[{"name": "orders_reads", "prefix": "/orders", "methods": ["GET", "POST"]}]
    )
    gw, _ = nginx_factory(spec)
    comparator = MirrorComparator(spec.old, spec.new, "X-User", limit=1000)
    try:
        gw.mirror("orders_reads", comparator.address)
        assert [get(gw, f"/orders/{i}", "w", method="POST")[0] for i in range(10)] == [200] * 10
        assert [get(gw, f"/orders/{i}", "r")[0] for i in range(5)] == [200] * 5
        deadline = time.monotonic() + 3
        while comparator.received < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert comparator.received == 5  # the five GETs, none of the ten POSTs
        comparator.close()
        started = time.perf_counter()
        statuses = [get(gw, f"/orders/{i}", "r")[0] for i in range(20)]  # mirror target now refuses
        print(f"20 requests with a dead comparator: {(time.perf_counter() - started) * 1000:.0f} ms")
        assert statuses == [200] * 20
    finally:
        comparator.close()


def test_a_flow_run_attaches_to_the_running_nginx(upstreams, nginx_factory, tmp_path) -> None:
    old, new = upstreams
    spec = route_spec(old, new, gateway=NGINX)
    gw, _ = nginx_factory(spec)
    gw.set_split("orders_reads", 30)
    again = attach_gateway(spec, gw.workdir)
    assert isinstance(again, NginxGateway) and again.split("orders_reads").percent_new == 30
    again.set_split("orders_reads", 0)
    assert {side_of(gw, f"u{i}") for i in range(30)} == {"old"}
    with pytest.raises(GatewayError, match="no gateway config"):
        attach_gateway(spec, tmp_path)


def test_a_new_service_erroring_in_the_canary_is_rolled_back_through_a_reload(
    upstreams, nginx_factory, control_store: ControlStore
) -> None:
    old, new = upstreams
    new.behaviour.error_fraction = 0.5  # user requests only (those carrying X-User)
    gates = [{"name": "error_rate", "threshold": 0.01}, {"name": "latency_ratio", "threshold": 2.0}]
    canary = {"steps": [50, 100], "soak_seconds": 5, "watch_seconds": 0.25, "min_requests": 5}
    spec = route_spec(old, new, gateway=NGINX, gates=gates, canary=canary)  # no mismatch gate: reach the canary
    gw, log = nginx_factory(spec)
    with Load(gw.port) as load:
        time.sleep(0.3)
        with pytest.raises(GateError) as caught:
            evaluate_routes(open_route_move(spec, control_store, gw, log, approve))
        sent_at_flip, new_at_flip = load.sent, load.sides.get("new", 0)
        time.sleep(0.5)
    assert caught.value.gate == "error_rate"
    assert gw.split("orders_reads").percent_new == 0
    rollback = control_store.audit_entries(MOVE, "route_rollback")
    assert len(rollback) == 1 and rollback[0]["detail"]["seconds"] < 1.0  # re-render, nginx -t, reload
    assert new_at_flip > 0 and load.sent > sent_at_flip + 20
    assert load.sides.get("new", 0) == new_at_flip  # after the flip, every request on old
    assert load.failures and all(f.startswith("500 ") for f in load.failures)  # the new service's own 500s
    assert completed(control_store, MOVE, "orders_reads") == set()


def test_the_route_move_flow_attaches_to_nginx_and_mirrors_from_the_flow(
    prefect_harness, upstreams, nginx_factory, tmp_path
) -> None:
    import yaml

    from shiftover.flows.route_move import route_move

    old, new = upstreams
    # its own name: the session's Prefect server keeps artifacts by move name, which other flow tests read
    spec = route_spec(old, new, gateway=NGINX, name="orders-routes-nginx")
    spec_path = tmp_path / "routes.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    gw, log = nginx_factory(spec)
    log.close()  # the flow binds the gateway's log socket itself
    with Load(gw.port) as load:
        time.sleep(0.3)
        result = route_move(str(spec_path), f"sqlite:///{tmp_path}/control.db", str(gw.workdir), auto_approve=True)
        time.sleep(0.3)
    assert result["ran"] == [s.name for s in build_route_plan(spec).stages]
    dark = result["stages"]["orders_reads.dark_launch"]
    assert dark["compared"] == 20 and dark["mismatches"] == 0 and dark["mirrored"] >= 20
    assert result["stages"]["orders_reads.canary_10pct"]["requests"] > 0  # the flow read nginx's access log
    assert load.failures == [] and load.sent > 100
    assert not gw.split("orders_reads").old_present
