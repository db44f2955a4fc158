"""An orders table with an ``amount`` numeric(12,2) column on each engine, and its expand/contract spec."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from shiftover.connect import get_engine
from shiftover.schema.columns import Target
from shiftover.schema.spec import ExpandContractSpec, parse_expand_contract

ROWS = 3_000
ENGINES = ["postgres", "mariadb", "sqlite"]


def amount_of(i: int) -> Decimal:
    return Decimal(i * 37 % 100_000) / 100


def make_spec(url: str, **changes: object) -> ExpandContractSpec:
    data: dict[str, object] = {
        "kind": "expand_contract",
        "name": "orders-cents",
        "database": {"url": url, "table": "orders"},
        "key": ["id"],
        "operations": [
            {
                "op": "change_column",
                "column": "amount",
                "to": "amount_cents",
                "type": "bigint",
                "up": "round(amount * 100)",
                "down": "amount_cents / 100.0",
                "reversible": True,
            },
            {"op": "add_column", "column": "channel", "type": "varchar(20)", "default": "'web'"},
        ],
        "lock": {"timeout_ms": 200, "attempts": 50, "backoff_ms": 20, "max_backoff_ms": 200},
        "backfill": {"chunk_rows": 250},
        "approvals": {"auto": True},
        "retention_hours": 0,  # runs go on to drop_old_columns at once (test_contract_proof tests the wait)
    }
    data.update(changes)
    return parse_expand_contract(data)


def spec_file(tmp_path: Path, spec: ExpandContractSpec, name: str = "spec") -> Path:
    """``spec`` as the YAML file the flows and the CLI take."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    return path


def respelt(url: str, tmp_path: Path) -> dict[str, Any]:
    """A spec's ``database`` naming the table of ``url`` another way: another host name and the schema
    named, or the SQLite file reached through a symlink."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        link = tmp_path / "another-name.db"
        link.symlink_to(str(parsed.database))
        return {"url": f"sqlite:///{link}", "table": "orders"}
    schema = "public" if parsed.get_backend_name() == "postgresql" else parsed.database
    host = parsed.set(host="localhost").render_as_string(hide_password=False)
    return {"url": host, "table": "orders", "schema": schema}


def create_orders(url: str, rows: int = ROWS) -> sa.Engine:
    engine = get_engine(url)
    meta = sa.MetaData()
    orders = sa.Table(
        "orders",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=True),  # SQLite's AFTER triggers fill it after NOT NULL checks
        sa.Column("note", sa.String(40)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": i, "amount": amount_of(i), "note": f"n{i}"} for i in range(1, rows + 1)])
        conn.execute(orders.update().where(orders.c.id == 7).values(amount=None))  # a NULL goes through too
    return engine


@pytest.fixture(params=ENGINES)
def orders(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> tuple[Target, ExpandContractSpec]:
    url = database_url(request.param)
    engine = create_orders(url)
    spec = make_spec(url)
    return Target.of(engine, spec), spec


@dataclass
class WriterLoad:
    """What ``constant_writer`` saw: each write's latency (seconds) and each refused write's error."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def constant_writer(url: str, keys: int) -> Iterator[WriterLoad]:
    """An application updating ``orders.note`` of keys 1..``keys`` in turn, one autocommit transaction
    each with a 2 ms gap, on its own connection, from before the block (five writes done) to its end."""
    stop, load = threading.Event(), WriterLoad()

    def write() -> None:
        writer = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with writer.connect() as conn:
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    with conn.begin():
                        conn.execute(
                            sa.text("UPDATE orders SET note = :n WHERE id = :i"), {"n": f"w{i}", "i": i % keys + 1}
                        )
                except sa.exc.DBAPIError as error:
                    load.errors.append(str(error.orig)[:100])
                load.latencies.append(time.monotonic() - t0)
                i += 1
                time.sleep(0.002)  # an application with gaps between transactions
        writer.dispose()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while len(load.latencies) < 5 and thread.is_alive():
            time.sleep(0.01)
        yield load
    finally:
        stop.set()
        thread.join()
