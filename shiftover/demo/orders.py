"""The demo ``orders`` table: its schema and generated rows, shared by the demo, tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

STATUSES = ("new", "paid", "shipped", "delivered", "cancelled")
_EPOCH = datetime(2024, 1, 1)


def orders_table(name: str = "orders", metadata: sa.MetaData | None = None) -> sa.Table:
    """7 columns: bigint key, bigint, numeric(12,2), text, nullable text, two timestamps."""
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def order_row(order_id: int, rng: random.Random) -> dict[str, Any]:
    created = _EPOCH + timedelta(seconds=order_id * 7 + rng.randrange(5))
    return {
        "id": order_id,
        "customer_id": rng.randrange(1, 50_000),
        "amount": Decimal(rng.randrange(100, 10_000_000)) / 100,
        "status": rng.choice(STATUSES),
        "note": None if rng.random() < 0.3 else f"note {rng.randrange(10**6)}",
        "created_at": created,
        "updated_at": created + timedelta(minutes=rng.randrange(600)),
    }


def generate_orders(count: int, *, start: int = 1, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for order_id in range(start, start + count):
        yield order_row(order_id, rng)


def create_orders(engine: Engine, name: str = "orders", rows: int = 0, *, batch: int = 5_000) -> sa.Table:
    """Create the table (dropping any old one) and fill it with ``rows`` generated rows."""
    table = orders_table(name)
    table.drop(engine, checkfirst=True)
    table.create(engine)
    buffer: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in generate_orders(rows):
            buffer.append(row)
            if len(buffer) >= batch:
                conn.execute(table.insert(), buffer)
                buffer.clear()
        if buffer:
            conn.execute(table.insert(), buffer)
    return table
