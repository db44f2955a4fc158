"""The reconcile and capture flows under Prefect's test harness (SQLite databases: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders, orders_table
from shiftover.flags.routing import WriteMode, set_write_mode
from shiftover.mapping import forget_reflections
from shiftover.preflight import resolve_mapping
from shiftover.reconcile import enqueue, queue_depth
from shiftover.rowsync import sync_keys
from shiftover.spec import load_spec

from .conftest import orders_spec

pytestmark = pytest.mark.flows


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, str, sa.Engine, sa.Engine]:
    old_url, new_url = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    old, new = get_engine(old_url), get_engine(new_url)
    create_orders(old, rows=100)
    orders_table().create(new)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(orders_spec("flowtest", old_url, new_url)))
    yield str(spec_path), f"sqlite:///{tmp_path}/control.db", old, new
    forget_reflections()


def rows(engine: sa.Engine) -> list[tuple[str, ...]]:
    with engine.connect() as conn:
        return [tuple(map(str, r)) for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id"))]


def test_reconcile_flow_drains_the_queue(prefect_harness: None, setup: tuple[str, str, sa.Engine, sa.Engine]) -> None:
    from shiftover.flows.reconcile import reconcile

    spec_path, control_url, old, new = setup
    store = open_store(control_url)
    store.register("flowtest", {"name": "flowtest"})  # started: the drain serves it, never starts it
    sync_keys(old, new, resolve_mapping(load_spec(spec_path)), [(i,) for i in range(1, 101)])
    with old.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET note = 'missed' WHERE id <= 10"))
    set_write_mode(store.engine, "flowtest", WriteMode.DUAL_OLD_PRIMARY, "test")
    enqueue(store.engine, "flowtest", [((i,), "upsert") for i in range(1, 11)])
    result = reconcile(spec_path=spec_path, control_url=control_url)
    assert result["before"]["pending"] == 10 and result["after"] == {"pending": 0, "dead": 0, "done": 10}
    assert rows(old) == rows(new)
    again = reconcile(spec_path=spec_path, control_url=control_url)
    assert again["synced"] == 0 and queue_depth(store.engine, "flowtest")["pending"] == 0


def test_capture_flows_install_replay_and_remove(
    prefect_harness: None, setup: tuple[str, str, sa.Engine, sa.Engine]
) -> None:
    from shiftover.flows.capture import capture_remove, capture_replay

    spec_path, control_url, old, new = setup
    open_store(control_url).register("flowtest", {"name": "flowtest"})  # started: capture never starts one
    first = capture_replay(spec_path=spec_path, control_url=control_url)
    assert first["changes"] == 0
    sync_keys(old, new, resolve_mapping(load_spec(spec_path)), [(i,) for i in range(1, 101)])  # the backfill
    with old.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'paid' WHERE id <= 20"))
        conn.execute(sa.text("DELETE FROM orders WHERE id > 90"))
    second = capture_replay(spec_path=spec_path, control_url=control_url, install=False)
    assert second["keys"] == 30 and rows(old) == rows(new)
    assert capture_remove(spec_path=spec_path, control_url=control_url)["removed"]
    with old.connect() as conn:
        assert not sa.inspect(conn).has_table("so_changelog_orders")
