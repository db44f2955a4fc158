"""The HAProxy driver on a real haproxy: weights without reload, stickiness, rollback time, retire."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftover.errors import GatewayError
from shiftover.routes.haproxy import attach_haproxy

from .conftest import get, require_haproxy, route_spec, side_of


def test_pass_through_routes_everything_to_old(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, _ = gateway_factory(route_spec(old, new))
    assert {side_of(gw, f"u{i}") for i in range(30)} == {"old"}
    assert side_of(gw, "u1", "/customers/1") == "old"
    split = gw.split("orders_reads")
    assert (split.old_weight, split.new_weight) == (100, 0)


def test_weights_change_without_reload_and_only_the_route_moves(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, _ = gateway_factory(route_spec(old, new))
    pid = gw.process.pid if gw.process else None
    split = gw.set_split("orders_reads", 100)
    assert split.percent_new == 100
    assert gw.process is not None and gw.process.pid == pid and gw.process.poll() is None  # same process
    assert {side_of(gw, f"u{i}") for i in range(30)} == {"new"}
    assert side_of(gw, "u1", "/customers/1") == "old"  # another path stays on the monolith
    assert get(gw, "/orders/1", "u1", method="POST")[1]["side"] == "old"  # a method not moved
    assert "weight 0" in gw.config_path.read_text()  # a restart would keep the split


def test_a_user_keeps_its_side_as_the_share_rises(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, _ = gateway_factory(route_spec(old, new))
    users = [f"user-{i}" for i in range(300)]
    on_new: set[str] = set()
    for pct in (10, 20, 50, 90):
        gw.set_split("orders_reads", pct)
        sides = {u: side_of(gw, u) for u in users}
        assert {u: side_of(gw, u) for u in users} == sides  # stable: asked twice, same answer
        now_new = {u for u, s in sides.items() if s == "new"}
        assert on_new <= now_new, f"{len(on_new - now_new)} user(s) flipped back to old at {pct}%"
        share = len(now_new) / len(users)
        assert abs(share - pct / 100) < 0.15, (pct, share)
        on_new = now_new


def test_rollback_takes_effect_in_under_a_second(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, _ = gateway_factory(route_spec(old, new))
    gw.set_split("orders_reads", 100)
    assert side_of(gw, "u1") == "new"
    flipped = time.perf_counter()
    gw.set_split("orders_reads", 0)
    users = [f"r{i}" for i in range(50)]
    while any(side_of(gw, u) != "old" for u in users):
        assert time.perf_counter() - flipped < 1.0
    elapsed = time.perf_counter() - flipped
    print(f"rollback: every following request on old after {elapsed * 1000:.1f} ms (incl. 50 requests)")
    assert elapsed < 1.0


def test_retire_old_removes_the_server_from_the_running_gateway_and_the_config(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, _ = gateway_factory(route_spec(old, new))
    gw.set_split("orders_reads", 100)
    split = gw.retire_old("orders_reads")
    assert not split.old_present and split.new_weight == 100
    assert "route_orders_reads/old" not in gw.servers()
    assert "route_orders_reads/new" in gw.servers()
    backend = gw.config_path.read_text().split("\nbackend route_orders_reads\n")[1]
    assert "server old" not in backend
    assert {side_of(gw, f"u{i}") for i in range(20)} == {"new"}
    assert side_of(gw, "u1", "/customers/1") == "old"  # the monolith still serves the rest


def test_access_log_records_each_side(upstreams, gateway_factory) -> None:
    old, new = upstreams
    gw, log = gateway_factory(route_spec(old, new))
    start = time.monotonic()
    gw.set_split("orders_reads", 50)
    for i in range(40):
        side_of(gw, f"u{i}")
    deadline = time.monotonic() + 2
    while len(log.since(start, "route_orders_reads")) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    hits = log.since(start, "route_orders_reads")
    assert len(hits) == 40
    assert {h.server for h in hits} == {"old", "new"}
    assert all(h.status == 200 and h.method == "GET" and h.path.startswith("/orders/") for h in hits)


def test_a_restart_keeps_the_splits_and_the_retired_server(upstreams, gateway_factory) -> None:
    old, new = upstreams
    spec = route_spec(
        old,
        new,
        routes=[
            {"name": "orders_reads", "prefix": "/orders"},
            {"name": "customers", "prefix": "/customers"},
        ],
    )
    gw, _ = gateway_factory(spec)
    gw.set_split("orders_reads", 100)
    gw.retire_old("orders_reads")
    gw.set_split("customers", 30)
    first = gw.process.pid if gw.process else None
    gw.restart()
    assert gw.process is not None and gw.process.pid != first
    assert gw.split("customers").percent_new == 30
    assert "route_orders_reads/old" not in gw.servers()
    assert {side_of(gw, f"u{i}") for i in range(20)} == {"new"}


STARTER = """
import sys, time
from pathlib import Path
from shiftover.routes.haproxy import start_haproxy
from shiftover.routes.spec import parse_route_spec

spec = parse_route_spec({"kind": "route", "name": "m", "old": {"address": "127.0.0.1:9"},
                         "new": {"address": "127.0.0.1:10"}, "routes": [{"name": "o", "prefix": "/o"}]})
print(start_haproxy(spec, workdir=Path(sys.argv[1])).process.pid, flush=True)
time.sleep(120)
"""


def running(pid: int) -> bool:
    """The process exists and is no zombie (a container's init may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_starter_leaves_no_haproxy_running(tmp_path: Path) -> None:
    require_haproxy()
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    try:
        assert running(pid)
        starter.kill()  # kill -9: no finally, no atexit in the starter
        starter.wait()
        deadline = time.monotonic() + 5
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(pid), "haproxy outlived the process that started it"
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_attaching_where_no_gateway_runs_names_the_directory(upstreams, gateway_factory, tmp_path: Path) -> None:
    spec = route_spec(*upstreams)
    with pytest.raises(GatewayError, match="no gateway config") as caught:
        attach_haproxy(spec, tmp_path)
    assert str(tmp_path) in str(caught.value)
    gw, _ = gateway_factory(spec)
    gw.stop()  # its config stays; nothing answers on the admin socket
    with pytest.raises(GatewayError, match="no haproxy answers"):
        attach_haproxy(spec, gw.workdir)
