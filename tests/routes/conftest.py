"""Real gateway fixtures: HAProxy from scripts/install-gateway, two tiny upstream HTTP servers.

Without haproxy on PATH the tests skip with the reason, except under CI=true, where it fails.
Every process and thread started here is stopped at the end of its test.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shiftover.routes.haproxy import start_haproxy
from shiftover.routes.nginx import start_nginx
from shiftover.routes.spec import RouteMoveSpec, parse_route_spec
from shiftover.routes.traffic import AccessLog

IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class Behaviour:
    """What an upstream does; tests change it while the server runs."""

    side: str
    error_fraction: float = 0.0  # share of user requests (with an X-User header) answered 500
    wrong_fraction: float = 0.0  # share of responses with a wrong ``total``
    delay_s: float = 0.0


class Upstream:
    """A threaded HTTP server answering JSON: its side, the path, the user, a fresh request id
    (noise that differs on every call) and a ``total`` derived from the path (the payload)."""

    def __init__(self, side: str) -> None:
        self.behaviour = Behaviour(side)
        self.requests = 0
        behaviour = lambda: self.behaviour  # noqa: E731
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def do_GET(self) -> None:
                upstream.requests += 1
                b = behaviour()
                if b.delay_s:
                    time.sleep(b.delay_s)
                if self.headers.get("X-User") and random.random() < b.error_fraction:
                    self._send(500, {"error": "boom"})
                    return
                total = sum(map(ord, self.path)) % 1000
                if random.random() < b.wrong_fraction:
                    total += 1
                self._send(
                    200,
                    {
                        "side": b.side,
                        "path": self.path,
                        "user": self.headers.get("X-User"),
                        "request_id": uuid.uuid4().hex,
                        "total": total,
                    },
                )

            do_POST = do_GET

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client (the gateway) closing a kept-alive connection is no failure here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def require_gateway(binary: str) -> str:
    """The path of a gateway binary (haproxy, nginx); skips without it (fails under CI=true)."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed: run scripts/install-gateway"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing gateway is a failure)")
        pytest.skip(message)
    return path


def require_haproxy() -> str:
    return require_gateway("haproxy")


def require_nginx() -> str:
    return require_gateway("nginx")


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    old, new = Upstream("old"), Upstream("new")
    yield old, new
    old.close()
    new.close()


def route_spec(old: Upstream, new: Upstream, **extra: Any) -> RouteMoveSpec:
    data: dict[str, Any] = {
        "kind": "route",
        "name": "orders-routes",
        "old": {"address": old.address},
        "new": {"address": new.address},
        "routes": [{"name": "orders_reads", "prefix": "/orders", "methods": ["GET", "HEAD"]}],
        "canary": {"steps": [10, 50, 100], "soak_seconds": 1.0, "watch_seconds": 0.25, "min_requests": 5},
        "dark_launch_samples": 20,
        "ignore_fields": ["side"],  # which upstream answered: differs by design
    }
    data.update(extra)
    # both test upstreams answer in about 1 ms, but on a loaded CI machine either side's p99 reaches
    # tens of ms: a 50 ms floor keeps the latency gate to tests that make a side slow on purpose
    data["canary"] = {"latency_floor_ms": 50, **data["canary"]}
    return parse_route_spec(data)


def started_gateways(tmp_path: Path, start_gateway: Callable[..., Any], name: str) -> Iterator[Any]:
    """A factory starting a gateway (with its access log) for a spec in its own folder; every one
    it started is stopped after the test."""
    started: list[tuple[Any, AccessLog]] = []

    def start(spec: RouteMoveSpec) -> tuple[Any, AccessLog]:
        workdir = tmp_path / f"{name}{len(started)}"
        workdir.mkdir()
        log = AccessLog(workdir / "log.sock")
        gw = start_gateway(spec, workdir=workdir, log_socket=log.path)
        started.append((gw, log))
        return gw, log

    yield start
    for gw, log in started:
        gw.stop()
        log.close()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    """Start HAProxy (with its access log) for a spec; everything is stopped after the test."""
    require_haproxy()
    yield from started_gateways(tmp_path, start_haproxy, "gw")


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Any]:
    """Start nginx (its own prefix dir, config and access log) for a spec; stopped after the test."""
    require_nginx()
    yield from started_gateways(tmp_path, start_nginx, "nginx")


def get(gw: Any, path: str, user: str | None = None, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """One request through a running gateway (HAProxy or nginx), as user ``user`` (X-User)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        conn.request(method, path, headers={"X-User": user} if user else {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if body else {}
    finally:
        conn.close()


def side_of(gw: Any, user: str, path: str = "/orders/1") -> str:
    """Which upstream (old or new) answered ``user``'s request for ``path``."""
    status, body = get(gw, path, user)
    assert status == 200, body
    return str(body["side"])


class Load:
    """Requests through the gateway from a thread (random users, a few paths) until stopped;
    counts every failure (connection error or 5xx) and which side answered."""

    def __init__(
        self, port: int, paths: tuple[str, ...] = ("/orders/1", "/orders/2", "/orders/3"), users: int = 200
    ) -> None:
        self.port, self.paths, self.users = port, paths, users
        self.sent = 0
        self.failures: list[str] = []
        self.sides: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            path = random.choice(self.paths)
            try:
                conn.request("GET", path, headers={"X-User": f"user-{random.randrange(self.users)}"})
                resp = conn.getresponse()
                body = resp.read()
                self.sent += 1
                if resp.status >= 500:
                    self.failures.append(f"{resp.status} {path}")
                else:
                    side = json.loads(body)["side"]
                    self.sides[side] = self.sides.get(side, 0) + 1
            except Exception as exc:
                self.failures.append(f"{exc.__class__.__name__} {path}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            time.sleep(0.002)
        conn.close()
