"""Versions of one orders application, for schema changes in place (``kind: expand_contract``).

    python examples/app/amounts_service.py --url postgresql+psycopg://... --version amount        # v1
    python examples/app/amounts_service.py --url postgresql+psycopg://... --version amount_cents  # v2
    python examples/app/amounts_service.py --url postgresql+psycopg://... --version amount_parts

Each version knows an order's amount in one form only, and nothing of the others: ``amount``
(numeric, in units), ``amount_cents`` (bigint, in cents) or ``amount_parts`` (two integer columns,
``amount_units`` and ``amount_subunits``: what a ``split_column`` of ``amount`` makes and a
``merge_columns`` into ``amount_cents`` takes). During a change two versions run at once, as in a
rolling deployment: the new one is started once ``expand`` added its columns, the old one stopped
once writes are switched, and contract drops the old columns after that. No version calls
Shiftover: the sync triggers keep the columns it does not know in step, which is what lets two
versions share the table.

Routes (JSON, the same server as ``service.py``): ``GET /orders/<id>`` answers ``{"id", <columns>}``;
``PUT /orders/<id>`` with ``{<column>: value, ...}`` (every column of the version, no other) updates
the row, or inserts it (with generated customer, status and timestamps) when it is absent;
``PATCH`` updates only; ``DELETE`` deletes.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from shiftover.examples.app.service import make_server

# version -> its columns, each with the type its values are bound as (so a driver without a decimal
# type, sqlite3, gets the value its column stores)
VERSIONS: dict[str, dict[str, sa.types.TypeEngine[Any]]] = {
    "amount": {"amount": sa.Numeric(12, 2)},
    "amount_cents": {"amount_cents": sa.BigInteger()},
    "amount_parts": {"amount_units": sa.BigInteger(), "amount_subunits": sa.Integer()},
}


class AmountsService:
    """One version of the application: reads and writes ``orders`` through its version's columns only."""

    def __init__(self, engine: sa.Engine, version: str, table: str = "orders") -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {sorted(VERSIONS)}, not {version!r}")
        self.engine, self.version, self.table = engine, version, table
        self.types = VERSIONS[version]
        self.columns = tuple(self.types)
        self.binds = [sa.bindparam(name, type_=type_) for name, type_ in self.types.items()]

    def values(self, body: dict[str, Any]) -> dict[str, Decimal | int]:
        if set(body) != set(self.columns):
            raise ValueError(f"this version writes {sorted(self.columns)} only, got {sorted(body)}")
        values: dict[str, Decimal | int] = {}
        for name, raw in body.items():
            if name == "amount":
                values[name] = Decimal(str(raw))
            elif isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"{name} must be an integer, got {raw!r}")
            else:
                values[name] = raw
        return values

    def get(self, order_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT {', '.join(self.columns)} FROM {self.table} WHERE id = :id"), {"id": order_id}
            ).first()
        return None if row is None else {"id": order_id, **dict(zip(self.columns, row, strict=True))}

    def put(self, order_id: int, body: dict[str, Any]) -> None:
        values = self.values(body)
        with self.engine.begin() as conn:
            if self._update(conn, order_id, values):
                return
            now = datetime.now().replace(microsecond=0)
            names = ", ".join(self.columns)
            params = ", ".join(f":{name}" for name in self.columns)
            conn.execute(
                sa.text(
                    f"INSERT INTO {self.table} (id, customer_id, {names}, status, created_at, updated_at) "
                    f"VALUES (:id, :customer, {params}, 'new', :now, :now)"
                ).bindparams(*self.binds),
                {"id": order_id, "customer": order_id % 50_000 + 1, "now": now, **values},
            )

    def patch(self, order_id: int, body: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            if not self._update(conn, order_id, self.values(body)):
                raise ValueError(f"no order {order_id}")

    def delete(self, order_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.table} WHERE id = :id"), {"id": order_id})

    def health(self) -> dict[str, Any]:
        return {"version": self.version, "columns": list(self.columns)}

    def _update(self, conn: sa.Connection, order_id: int, values: dict[str, Decimal | int]) -> bool:
        sets = ", ".join(f"{name} = :{name}" for name in self.columns)
        result = conn.execute(
            sa.text(f"UPDATE {self.table} SET {sets} WHERE id = :id").bindparams(*self.binds),
            {"id": order_id, **values},
        )
        return result.rowcount > 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the database holding the orders table")
    parser.add_argument("--version", choices=sorted(VERSIONS), required=True, help="the form of the amount it knows")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    server = make_server(AmountsService(sa.create_engine(args.url), args.version), args.host, args.port)
    print(f"orders ({args.version}) on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
