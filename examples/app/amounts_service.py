"""Two versions of one orders application, for a schema change in place (``kind: expand_contract``).

    python examples/app/amounts_service.py --url postgresql+psycopg://... --column amount        # v1
    python examples/app/amounts_service.py --url postgresql+psycopg://... --column amount_cents  # v2

v1 knows ``orders.amount`` (numeric, in units); v2 knows ``orders.amount_cents`` (bigint, in cents)
and nothing of ``amount``. During an expand/contract change both run at once, as in a rolling
deployment: v2 is started once ``expand`` added the column, v1 stopped once writes are switched,
and contract drops ``amount`` after that. Neither version calls Shiftover: the sync triggers keep
the column it does not know in step, which is what lets the two versions share the table.

Routes (JSON, the same server as ``service.py``): ``GET /orders/<id>`` answers ``{"id", <column>}``;
``PUT /orders/<id>`` with ``{<column>: value}`` updates the row, or inserts it (with generated
customer, status and timestamps) when it is absent; ``PATCH`` updates only; ``DELETE`` deletes.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from shiftover.examples.app.service import make_server

COLUMNS = ("amount", "amount_cents")


class AmountsService:
    """One version of the application: reads and writes ``orders`` through ``column`` only."""

    def __init__(self, engine: sa.Engine, column: str, table: str = "orders") -> None:
        if column not in COLUMNS:
            raise ValueError(f"column must be one of {COLUMNS}, not {column!r}")
        self.engine, self.column, self.table = engine, column, table
        # typed, so a driver without a decimal type (sqlite3) gets the value its column stores
        self.bind = sa.bindparam("value", type_=sa.Numeric(12, 2) if column == "amount" else sa.BigInteger())

    def value(self, body: dict[str, Any]) -> Decimal | int:
        if set(body) != {self.column}:
            raise ValueError(f"this version writes {self.column!r} only, got {sorted(body)}")
        raw = body[self.column]
        if self.column == "amount":
            return Decimal(str(raw))
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"amount_cents must be an integer, got {raw!r}")
        return raw

    def get(self, order_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {self.column} FROM {self.table} WHERE id = :id"), {"id": order_id}
            ).first()
        return None if row is None else {"id": order_id, self.column: row[0]}

    def put(self, order_id: int, body: dict[str, Any]) -> None:
        value = self.value(body)
        with self.engine.begin() as conn:
            if self._update(conn, order_id, value):
                return
            now = datetime.now().replace(microsecond=0)
            conn.execute(
                sa.text(
                    f"INSERT INTO {self.table} (id, customer_id, {self.column}, status, created_at, updated_at) "
                    "VALUES (:id, :customer, :value, 'new', :now, :now)"
                ).bindparams(self.bind),
                {"id": order_id, "customer": order_id % 50_000 + 1, "value": value, "now": now},
            )

    def patch(self, order_id: int, body: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            if not self._update(conn, order_id, self.value(body)):
                raise ValueError(f"no order {order_id}")

    def delete(self, order_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.table} WHERE id = :id"), {"id": order_id})

    def health(self) -> dict[str, Any]:
        return {"column": self.column}

    def _update(self, conn: sa.Connection, order_id: int, value: Decimal | int) -> bool:
        result = conn.execute(
            sa.text(f"UPDATE {self.table} SET {self.column} = :value WHERE id = :id").bindparams(self.bind),
            {"value": value, "id": order_id},
        )
        return result.rowcount > 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the database holding the orders table")
    parser.add_argument("--column", choices=COLUMNS, required=True, help="amount: v1; amount_cents: v2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    server = make_server(AmountsService(sa.create_engine(args.url), args.column), args.host, args.port)
    print(f"orders ({args.column}) on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
