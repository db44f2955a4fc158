"""A small orders HTTP service that writes through Shiftover's dual-writer.

    python examples/app/service.py --spec examples/orders.yaml --control-url sqlite:///.shiftover/demo/control.db

Routes (JSON): ``PUT /orders/<id>`` upsert the full row, ``PATCH /orders/<id>`` update columns,
``DELETE /orders/<id>``, ``GET /orders/<id>`` (routed and shadowed by the migration's flags),
``GET /health`` (flag client status, held keys). The service never decides where a row goes:
the flags do, and a flip reaches it within the flag client's TTL.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import threading
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import sqlalchemy as sa

from shiftover.dualwrite import DualWriter
from shiftover.spec import load_spec

log = logging.getLogger("examples.orders")
_PATH = re.compile(r"^/orders/(-?\d+)$")


class Service(Protocol):
    """What ``make_server`` serves: this module's ``OrdersService``, or ``amounts_service.AmountsService``."""

    def get(self, order_id: int) -> dict[str, Any] | None: ...
    def put(self, order_id: int, body: dict[str, Any]) -> None: ...
    def patch(self, order_id: int, body: dict[str, Any]) -> None: ...
    def delete(self, order_id: int) -> None: ...
    def health(self) -> dict[str, Any]: ...


class OrdersService:
    """The application's logic: coerce JSON into typed rows and hand them to the dual-writer."""

    def __init__(self, writer: DualWriter) -> None:
        self.writer = writer
        self.table = writer.mapping.source_table_obj(writer.old)

    def coerce(self, body: dict[str, Any]) -> dict[str, Any]:
        """JSON values into the old table's Python types (decimals, timestamps)."""
        row = {}
        for name, value in body.items():
            if name not in self.table.c:
                raise ValueError(f"unknown column {name!r}")
            row[name] = _coerce(self.table.c[name].type, value)
        return row

    def put(self, order_id: int, body: dict[str, Any]) -> None:
        self.writer.upsert(self.coerce({**body, "id": order_id}))

    def patch(self, order_id: int, body: dict[str, Any]) -> None:
        self.writer.update((order_id,), self.coerce(body))

    def delete(self, order_id: int) -> None:
        self.writer.delete((order_id,))

    def get(self, order_id: int) -> dict[str, Any] | None:
        return self.writer.read((order_id,))

    def health(self) -> dict[str, Any]:
        return {
            "flags": asdict(self.writer.flags.status()),
            "routing": str(self.writer.routing().writes),
            "held_keys": self.writer.replicator.backlog,
        }


def _coerce(sql_type: sa.types.TypeEngine[Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        kind = sql_type.python_type
    except NotImplementedError:
        return value
    if kind is Decimal:
        return Decimal(str(value))
    if kind is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind is int and not isinstance(value, int):
        return int(value)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def make_server(service: Service, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` (port 0: any free port; see ``server.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep the load generator's output readable
            pass

        def _send(self, status: int, payload: Any = None) -> None:
            body = json.dumps(payload, default=_json_default).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _route(self, method: str) -> None:
            if method == "GET" and self.path == "/health":
                return self._send(HTTPStatus.OK, service.health())
            match = _PATH.match(self.path)
            if not match:
                return self._send(HTTPStatus.NOT_FOUND, {"error": "no such route"})
            order_id = int(match.group(1))
            try:
                if method == "GET":
                    row = service.get(order_id)
                    return self._send(HTTPStatus.OK if row else HTTPStatus.NOT_FOUND, row or {"error": "not found"})
                if method == "PUT":
                    service.put(order_id, self._body())
                elif method == "PATCH":
                    service.patch(order_id, self._body())
                else:
                    service.delete(order_id)
            except (ValueError, sa.exc.IntegrityError) as exc:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc).splitlines()[0]})
            except Exception as exc:
                log.exception("write failed")
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": type(exc).__name__})
            return self._send(HTTPStatus.NO_CONTENT)

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--control-url", default="sqlite:///.shiftover/demo/control.db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--async-secondary", action="store_true", help="secondary writes off the request path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    writer = DualWriter.from_spec(load_spec(args.spec), args.control_url, asynchronous=args.async_secondary)
    server = make_server(OrdersService(writer), args.host, args.port)
    print(f"orders service on http://{args.host}:{server.server_port}", flush=True)
    # SIGTERM stops like Ctrl-C, so queued asynchronous secondary writes are flushed before exit.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        writer.close()


if __name__ == "__main__":
    main()
