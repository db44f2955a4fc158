"""``shiftover demo --with-routes``: after the table move, the route move (the strangler fig).

``GET /orders/<id>`` goes from the monolith (the example orders service on the dual-writer, which
now reads the new store) to the new FastAPI service (``examples/app/orders_api.py``) through a real
HAProxy, on the one evaluator: pass-through, dark launch, a canary step, the switch and the
retirement of the old route, approvals answered automatically (the demo's route spec names no
approvers) and recorded as such. Readers keep requesting orders through the gateway the whole time;
every failed request is counted. Needs haproxy (``scripts/install-gateway``); the default demo
does not run this.
"""

from __future__ import annotations

import http.client
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shiftover.connect import get_engine
from shiftover.dualwrite import DualWriter
from shiftover.errors import ShiftoverError
from shiftover.spec import MigrationSpec


@dataclass
class RouteDemoReport:
    ran: list[str]
    seconds: float
    requests: int
    failures: list[str] = field(default_factory=list)
    percent_new: float = 0.0
    old_present: bool = True

    def render(self) -> str:
        return "\n".join(
            [
                "",
                f"Route move GET /orders/<id>, monolith -> new service through HAProxy ({self.seconds:.1f}s): "
                + ", ".join(s.split(".", 1)[1] for s in self.ran),
                f"  {self.requests} reads through the gateway during the move, {len(self.failures)} failed; "
                f"now {self.percent_new:g}% on the new service, the old upstream "
                f"{'still in the route' if self.old_present else 'retired'}",
            ]
        )


def require_haproxy() -> None:
    if shutil.which("haproxy") is None:
        raise ShiftoverError("--with-routes needs haproxy on PATH: run scripts/install-gateway")


class Readers:
    """Users reading orders through the gateway (a stable user header each) until stopped."""

    def __init__(self, port: int, keys: int) -> None:
        self.port, self.keys, self.sent = port, keys, 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-readers", daemon=True)

    def __enter__(self) -> Readers:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            path = f"/orders/{random.randint(1, self.keys)}"
            try:
                conn.request("GET", path, headers={"X-User": f"user-{random.randrange(200)}"})
                resp = conn.getresponse()
                resp.read()
                self.sent += 1
                if resp.status >= 500:
                    self.failures.append(f"{resp.status} {path}")
            except Exception as exc:  # a failed request is what the demo counts, not a crash
                self.failures.append(f"{type(exc).__name__} {path}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            time.sleep(0.005)
        conn.close()


def quiet_resets(handle_error: Any) -> Any:
    """The server's error handler, silent for a client (HAProxy) closing a kept-alive connection."""
    import sys

    def handle(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            handle_error(request, client_address)

    return handle


def route_spec_data(migration: str, old_port: int, new_port: int, keys: int) -> dict[str, Any]:
    return {
        "kind": "route",
        "name": f"{migration}-routes",
        "old": {"address": f"127.0.0.1:{old_port}"},
        "new": {"address": f"127.0.0.1:{new_port}"},
        "routes": [
            {
                "name": "orders_reads",
                "prefix": "/orders",
                "methods": ["GET", "HEAD"],
                "samples": [f"/orders/{i}" for i in range(1, min(keys, 40) + 1)],
                "requires": {"migration": migration, "phase": "reads_switched"},
            }
        ],
        "canary": {"steps": [50, 100], "soak_seconds": 2, "watch_seconds": 0.5, "min_requests": 5},
        "gates": [
            {"name": "error_rate", "threshold": 0},
            {"name": "latency_ratio", "threshold": 5},
            {"name": "mismatch_rate", "threshold": 0},
        ],
        "dark_launch_samples": 40,
    }


def run_route_demo(workdir: Path, spec: MigrationSpec, control_url: str, keys: int) -> RouteDemoReport:
    """Serve the monolith and the new service, start HAProxy in front, and run the ``route-move``
    flow to the end; everything started here is stopped before returning."""
    import uvicorn

    from shiftover.examples.app.orders_api import make_app
    from shiftover.examples.app.service import OrdersService, make_server
    from shiftover.flows.route_move import route_move
    from shiftover.routes.haproxy import attach_haproxy, start_haproxy
    from shiftover.routes.spec import load_route_spec

    require_haproxy()
    started = time.monotonic()
    writer = DualWriter.from_spec(spec, control_url)
    monolith = make_server(OrdersService(writer))
    monolith.handle_error = quiet_resets(monolith.handle_error)  # type: ignore[method-assign]
    threading.Thread(target=monolith.serve_forever, name="monolith", daemon=True).start()
    api = uvicorn.Server(uvicorn.Config(make_app(get_engine(spec.target.url)), port=0, log_level="warning"))
    api_thread = threading.Thread(target=api.run, name="orders-api", daemon=True)
    api_thread.start()
    gateway = None
    try:
        deadline = time.monotonic() + 15
        while not (api.started and api.servers):
            if time.monotonic() > deadline:
                raise ShiftoverError("the new orders service did not start within 15 s")
            time.sleep(0.05)
        new_port = api.servers[0].sockets[0].getsockname()[1]
        gwdir = workdir / "gateway"
        gwdir.mkdir(parents=True, exist_ok=True)
        spec_path = workdir / "orders-routes.yaml"
        spec_path.write_text(
            yaml.safe_dump(route_spec_data(spec.name, monolith.server_port, new_port, keys), sort_keys=False)
        )
        route = load_route_spec(spec_path)
        gateway = start_haproxy(route, workdir=gwdir, log_socket=gwdir / "log.sock")
        print(f"Route move: HAProxy on 127.0.0.1:{gateway.port} in front of both services ...", flush=True)
        with Readers(gateway.port, keys) as readers:
            time.sleep(0.5)
            result = route_move(str(spec_path), control_url, str(gwdir), auto_approve=True)
            time.sleep(0.5)
        split = attach_haproxy(route, gwdir).split("orders_reads")  # as the flow left it
        return RouteDemoReport(
            ran=list(result["ran"]),
            seconds=time.monotonic() - started,
            requests=readers.sent,
            failures=readers.failures,
            percent_new=split.percent_new,
            old_present=split.old_present,
        )
    finally:
        if gateway is not None:
            gateway.stop()
        api.should_exit = True
        api_thread.join(10)
        monolith.shutdown()
        monolith.server_close()
        writer.close()
