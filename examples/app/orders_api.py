"""The new orders service (FastAPI) that takes over ``GET /orders/<id>`` from the monolith
(``service.py``) in a route move (``examples/orders-routes.yaml``): it reads the new store only.

    python examples/app/orders_api.py --url sqlite:///.shiftover/demo/new.db --port 8100

Its answers must equal the monolith's field for field, or the dark launch stops the move:
``amount_as_float=True`` is a common slip (amounts as JSON numbers, ``12.5``, where the monolith
writes ``"12.50"``), which the comparator reports as a mismatch on ``amount``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from shiftover.examples.app.service import _json_default


def make_app(engine: sa.Engine, table: str = "orders", *, amount_as_float: bool = False) -> FastAPI:
    orders = sa.Table(table, sa.MetaData(), autoload_with=engine)
    app = FastAPI(title="orders-api")

    @app.get("/orders/{order_id}")
    def get_order(order_id: int) -> Any:
        with engine.connect() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        order = dict(row)
        if amount_as_float:
            order["amount"] = float(order["amount"])
        body = json.dumps(order, default=_json_default)  # the monolith's encoding
        return Response(body, media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the new store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    uvicorn.run(make_app(sa.create_engine(args.url)), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
