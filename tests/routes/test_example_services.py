"""The example: the orders service (``examples/app/service.py``) plays the monolith, the new
FastAPI service (``examples/app/orders_api.py``) reads the new store, and a route move sends
``GET /orders/<id>`` from one to the other through a real haproxy."""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore, open_store
from shiftover.demo import create_orders, orders_table
from shiftover.errors import GateError
from shiftover.flows.routes import evaluate_routes, open_route_move
from shiftover.routes.spec import parse_route_spec
from shiftover.spec import parse_spec

ROWS = 40


class Services:
    def __init__(self, tmp: Path, amount_as_float: bool) -> None:
        import uvicorn

        from shiftover.dualwrite import DualWriter
        from shiftover.examples.app.orders_api import make_app
        from shiftover.examples.app.service import OrdersService, make_server

        old, new = get_engine(f"sqlite:///{tmp}/old.db"), get_engine(f"sqlite:///{tmp}/new.db")
        create_orders(old, rows=ROWS)
        table = orders_table()
        table.create(new)
        with old.connect() as src, new.begin() as dst:  # the table move already copied the rows
            dst.execute(table.insert(), [dict(r) for r in src.execute(sa.select(table)).mappings()])
        self.control_url = f"sqlite:///{tmp}/control.db"
        open_store(self.control_url)
        spec = parse_spec(
            {
                "name": "orders",
                "source": {"url": f"sqlite:///{tmp}/old.db", "table": "orders"},
                "target": {"url": f"sqlite:///{tmp}/new.db", "table": "orders"},
                "key": ["id"],
            }
        )
        self.writer = DualWriter.from_spec(spec, self.control_url)
        self.monolith = make_server(OrdersService(self.writer))
        threading.Thread(target=self.monolith.serve_forever, daemon=True).start()
        config = uvicorn.Config(make_app(new, amount_as_float=amount_as_float), port=0, log_level="warning")
        self.api = uvicorn.Server(config)
        self.api_thread = threading.Thread(target=self.api.run, daemon=True)
        self.api_thread.start()
        deadline = time.monotonic() + 15
        while not (self.api.started and self.api.servers):
            assert time.monotonic() < deadline, "the FastAPI service did not start"
            time.sleep(0.05)
        self.api_port = self.api.servers[0].sockets[0].getsockname()[1]

    def close(self) -> None:
        self.api.should_exit = True
        self.api_thread.join(10)
        self.monolith.shutdown()
        self.monolith.server_close()
        self.writer.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    made: list[Services] = []

    def make(amount_as_float: bool = False) -> Services:
        made.append(Services(tmp_path, amount_as_float))
        return made[-1]

    yield make
    for s in made:
        s.close()


def route_move(s: Services) -> Any:
    return parse_route_spec(
        {
            "kind": "route",
            "name": "orders-routes",
            "old": {"address": f"127.0.0.1:{s.monolith.server_port}"},
            "new": {"address": f"127.0.0.1:{s.api_port}"},
            "routes": [
                {"name": "orders_reads", "prefix": "/orders", "samples": [f"/orders/{i}" for i in range(1, ROWS + 1)]}
            ],
            "canary": {"steps": [50, 100], "soak_seconds": 1.5, "watch_seconds": 0.25, "min_requests": 5},
            "gates": [
                {"name": "error_rate", "threshold": 0},
                {"name": "latency_ratio", "threshold": 5},
                {"name": "mismatch_rate", "threshold": 0},
            ],
            "dark_launch_samples": ROWS,
        }
    )


class Readers:
    """Users reading orders through the gateway; any answer other than 200 is a failure."""

    def __init__(self, port: int) -> None:
        self.port, self.sent, self.failures = port, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            try:
                conn.request(
                    "GET", f"/orders/{random.randint(1, ROWS)}", headers={"X-User": f"u{random.randrange(99)}"}
                )
                resp = conn.getresponse()
                resp.read()
                self.sent += 1
                if resp.status != 200:
                    self.failures.append(str(resp.status))
            except Exception as exc:
                self.failures.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            time.sleep(0.003)
        conn.close()


def test_the_orders_reads_move_to_the_new_service_under_load(
    services, gateway_factory, control_store: ControlStore
) -> None:
    s = services()
    spec = route_move(s)
    gw, log = gateway_factory(spec)
    readers = Readers(gw.port)
    readers.thread.start()
    try:
        report = evaluate_routes(open_route_move(spec, control_store, gw, log, lambda stage, summary: "alice"))
    finally:
        readers.stop.set()
        readers.thread.join(5)
    assert report["stages"]["orders_reads.dark_launch"] == {"compared": ROWS, "mismatches": 0}
    assert readers.failures == [] and readers.sent > 100
    served = {h.server for h in log.since(0.0, "route_orders_reads")}
    assert served == {"old", "new"}
    assert not gw.split("orders_reads").old_present


def test_the_dark_launch_catches_the_new_service_s_float_amounts(
    services, gateway_factory, control_store: ControlStore
) -> None:
    s = services(amount_as_float=True)
    spec = route_move(s)
    gw, log = gateway_factory(spec)
    with pytest.raises(GateError) as caught:
        evaluate_routes(open_route_move(spec, control_store, gw, log, lambda stage, summary: "alice"))
    assert caught.value.gate == "mismatch_rate"
    sample = caught.value.report.rows[0]
    assert sample["field"] == "amount" and isinstance(sample["old"], str) and isinstance(sample["new"], float)
    assert gw.split("orders_reads").percent_new == 0
