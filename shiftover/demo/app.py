"""The application that keeps serving while the demo and the end-to-end tests migrate its
table: the example orders service (``examples/app/service.py``) on the dual-writer, served
over HTTP in this process and driven by its load generator (``examples/app/loadgen.py``)."""

from __future__ import annotations

import threading

from shiftover.dualwrite import DualWriter
from shiftover.examples.app.loadgen import LoadStats, run_load
from shiftover.examples.app.service import OrdersService, make_server

WRITE_OPS = ("put", "patch", "delete")


class LiveApplication:
    """Serve ``writer``'s table over HTTP and drive it from ``threads`` connections until ``stop()``.

    ``keys`` should reach past the table's last key so that some writes insert new rows.
    """

    def __init__(self, writer: DualWriter, keys: range, *, threads: int = 2, requests_per_second: float = 200) -> None:
        self.writer = writer
        self._server = make_server(OrdersService(writer))
        self._stop = threading.Event()
        self._stats: list[LoadStats] = []
        url = f"http://127.0.0.1:{self._server.server_port}"
        pause = threads / requests_per_second
        self._serving = threading.Thread(target=self._server.serve_forever, name="orders-service", daemon=True)
        self._loading = threading.Thread(
            target=lambda: self._stats.append(
                run_load(url, seconds=24 * 3600, threads=threads, keys=keys, pause=pause, stop=self._stop)
            ),
            name="load-generator",
            daemon=True,
        )

    def start(self) -> LiveApplication:
        self._serving.start()
        self._loading.start()
        return self

    def stop(self) -> LoadStats:
        """Stop the load, then the service; wait for pending secondary writes."""
        self._stop.set()
        self._loading.join(timeout=120)
        self._server.shutdown()
        self._server.server_close()
        self.writer.flush()
        return self._stats[0] if self._stats else LoadStats()


def writes(stats: LoadStats) -> int:
    return sum(stats.ok[op] for op in WRITE_OPS)
