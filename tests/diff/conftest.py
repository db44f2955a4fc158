"""An orders table pair on PostgreSQL and a migration opened on it, for the gate and flow tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.demo import create_orders, orders_table
from shiftover.migration import Migration, open_migration
from shiftover.phases import Phase
from shiftover.spec import parse_spec

ORDERS = 600


def spec_dict(source_url: str, target_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "orders-move",
        "source": {"url": source_url, "table": "orders"},
        "target": {"url": target_url, "table": "orders"},
        "key": ["id"],
        **extra,
    }


@pytest.fixture
def orders_urls(pg_database: Callable[[], str]) -> tuple[str, str]:
    """Two PostgreSQL databases holding the same ``ORDERS`` demo orders."""
    source, target = pg_database(), pg_database()
    create_orders(get_engine(source), rows=ORDERS)
    create_orders(get_engine(target), rows=ORDERS)
    return source, target


@pytest.fixture
def open_orders(orders_urls: tuple[str, str], control_store: ControlStore) -> Callable[..., Migration]:
    """Open the orders migration with spec overrides (validation, expectations, gates)."""

    def make(**extra: Any) -> Migration:
        return open_migration(parse_spec(spec_dict(*orders_urls, **extra)), str(control_store.engine.url))

    return make


def break_target(url: str) -> dict[tuple[int], str]:
    """3 changed, 2 missing, 1 extra row in the target; returns the expected kinds by key."""
    engine = get_engine(url)
    t = orders_table()
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id.in_([10, 250, 599])).values(status="tampered"))
        conn.execute(t.delete().where(t.c.id.in_([42, 300])))
        conn.execute(
            sa.insert(t).from_select(
                [c.name for c in t.columns],
                sa.select(sa.literal(5000).label("id"), *[t.c[c.name] for c in t.columns if c.name != "id"]).where(
                    t.c.id == 1
                ),
            )
        )
    return {
        (10,): "changed",
        (250,): "changed",
        (599,): "changed",
        (42,): "missing",
        (300,): "missing",
        (5000,): "extra",
    }


def write_spec(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def bring_to_backfilled(store: ControlStore, name: str) -> None:
    for phase in (Phase.DUAL_WRITING, Phase.BACKFILLING, Phase.BACKFILLED):
        store.transition(name, phase, "test")
