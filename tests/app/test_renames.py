"""A mapping with renamed columns: new-primary writes land in the old table under the old
names, shadow reads compare in the target's shape, and ``from_spec`` builds it all from a spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import yaml

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore, utcnow
from shiftover.demo import create_orders
from shiftover.dualwrite import DualWriter
from shiftover.flags.routing import WriteMode, set_shadow, set_write_mode
from shiftover.metrics import mismatch_rate
from shiftover.rowsync import sync_keys
from shiftover.spec import load_spec

from .conftest import order


def test_renamed_columns_through_every_dual_mode(
    pg_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    old_url, new_url = pg_database(), pg_database()
    old, new = get_engine(old_url), get_engine(new_url)
    create_orders(old, rows=20)
    with new.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE purchases (order_id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2) "
                "NOT NULL, state varchar(20) NOT NULL, note text, created_at timestamp NOT NULL, updated_at timestamp NOT NULL)"  # noqa: E501
            )
        )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "rename",
                "source": {"url": old_url, "table": "orders"},
                "target": {"url": new_url, "table": "purchases"},
                "key": ["id"],
                "columns": [
                    {"name": "id", "target": "order_id"},
                    "customer_id",
                    {"name": "amount", "target": "total"},
                    {"name": "status", "target": "state"},
                    "note",
                    "created_at",
                    "updated_at",
                ],
            }
        )
    )
    control_url = control_store.engine.url.render_as_string(False)
    writer = DualWriter.from_spec(load_spec(spec_path), control_url, ttl=0.05)
    try:
        sync_keys(old, new, writer.mapping, [(i,) for i in range(1, 21)])
        eng = control_store.engine
        set_write_mode(eng, "rename", WriteMode.DUAL_NEW_PRIMARY, "test")
        set_shadow(eng, "rename", True, "test")
        writer.flags.refresh()
        writer.insert(order(500, status="paid"))
        writer.update((3,), {"status": "shipped"})
        writer.delete((4,))
        with old.connect() as conn:
            assert conn.execute(sa.text("SELECT status FROM orders WHERE id = 500")).scalar() == "paid"
            assert conn.execute(sa.text("SELECT status FROM orders WHERE id = 3")).scalar() == "shipped"
            assert conn.execute(sa.text("SELECT count(*) FROM orders WHERE id = 4")).scalar() == 0
        since = utcnow()
        row = writer.read((500,))
        assert row is not None and row["status"] == "paid" and "state" not in row  # the application's shape
        with new.begin() as conn:
            conn.execute(sa.text("UPDATE purchases SET total = 1 WHERE order_id = 5"))
        writer.read((5,))
        writer.flush()
        assert mismatch_rate(eng, "rename", since) == (2, 1)
        set_write_mode(eng, "rename", WriteMode.DUAL_OLD_PRIMARY, "test")
        writer.flags.refresh()
        writer.upsert(order(501, status="new"))
        with new.connect() as conn:
            assert conn.execute(sa.text("SELECT state FROM purchases WHERE order_id = 501")).scalar() == "new"
    finally:
        writer.close()
