"""Fixtures for the application side: an old and a new orders table on a real server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.demo import create_orders, orders_table
from shiftover.dualwrite import DualWriter
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import WriteMode, set_write_mode
from shiftover.mapping import TableMapping
from shiftover.preflight import resolve_mapping
from shiftover.rowsync import sync_keys
from shiftover.spec import parse_spec


@dataclass
class Pair:
    old: sa.Engine
    new: sa.Engine
    mapping: TableMapping
    store: ControlStore
    name: str
    flags: FlagClient

    def set_mode(self, mode: WriteMode) -> None:
        set_write_mode(self.store.engine, self.name, mode, "test")
        self.flags.refresh()

    def writer(self, *, new: sa.Engine | None = None, mapping: TableMapping | None = None, **kw: Any) -> DualWriter:
        """A dual-writer for this pair (``new`` or ``mapping`` swapped in when given)."""
        return DualWriter(
            self.old, new or self.new, mapping or self.mapping, self.flags, self.store.engine, self.name, **kw
        )

    def rows(self, which: str) -> list[tuple[Any, ...]]:
        """Every row of one side, in target column order, normalised for comparison."""
        engine = self.old if which == "old" else self.new
        table = self.mapping.source_table if which == "old" else self.mapping.target_table
        cols = [c.source if which == "old" else c.target for c in self.mapping.columns]
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table} ORDER BY id"))
            return [tuple(str(v) if v is not None else None for v in r) for r in result]


def orders_spec(name: str, old_url: str, new_url: str, **extra: Any) -> dict[str, Any]:
    """A spec (as parsed YAML) moving the demo ``orders`` table from ``old_url`` to ``new_url``."""
    return {
        "name": name,
        "source": {"url": old_url, "table": "orders"},
        "target": {"url": new_url, "table": "orders"},
        "key": ["id"],
        **extra,
    }


def make_pair(old_url: str, new_url: str, store: ControlStore, *, rows: int = 50, name: str = "orders_move") -> Pair:
    old, new = get_engine(old_url), get_engine(new_url)
    create_orders(old, rows=rows)
    orders_table().create(new)
    spec = parse_spec(orders_spec(name, old_url, new_url))
    flags = FlagClient(store.engine, prefix=f"{name}:", start=False)
    pair = Pair(old, new, resolve_mapping(spec), store, name, flags)
    sync_keys(old, new, pair.mapping, [(i,) for i in range(1, rows + 1)])  # a finished backfill
    return pair


def order(order_id: int, **changes: Any) -> dict[str, Any]:
    """A row in the application's shape."""
    row = {
        "id": order_id,
        "customer_id": 7,
        "amount": Decimal("12.50"),
        "status": "new",
        "note": None,
        "created_at": datetime(2025, 1, 1, 12),
        "updated_at": datetime(2025, 1, 1, 12),
    }
    return {**row, **changes}


@pytest.fixture
def pg_pair(pg_database: Callable[[], str], control_store: ControlStore) -> Pair:
    return make_pair(pg_database(), pg_database(), control_store)


@pytest.fixture
def maria_pair(mariadb_database: Callable[[], str], control_store: ControlStore) -> Pair:
    return make_pair(mariadb_database(), mariadb_database(), control_store)


@pytest.fixture
def sqlite_pair(sqlite_database: Callable[[], str], control_store: ControlStore) -> Pair:
    return make_pair(sqlite_database(), sqlite_database(), control_store)


def unreachable(engine: sa.Engine) -> sa.Engine:
    """The same database as seen from a process that cannot reach it (refused, or no such file)."""
    if engine.dialect.name == "sqlite":
        return sa.create_engine("sqlite:////nonexistent-dir/unreachable.db")
    return sa.create_engine(engine.url.set(port=1), connect_args={"connect_timeout": 1})
