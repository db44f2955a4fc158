"""rename_table on PostgreSQL: the table renamed and a view of the old name created in one
transaction, so old code (old name) and new code (new name) read and write the same rows; the view
goes only in the contract's last step, after both approvals; a rollback before then renames the
table back exactly. MariaDB and SQLite are refused by the preflight, saying why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import create_orders, make_spec

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table

RENAME = {"op": "rename_table", "to": "purchases"}


def test_postgres_renames_behind_a_view_rolls_back_exactly_and_contracts(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[RENAME])
    path = tmp_path / "rename.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    before = snapshot_table(engine, "orders", ("id",))

    report = run_schema_change(str(path), control, options, stop_after="switch_writes")
    assert report["ran"][0] == "expand" and report["ran"][-1] == "switch_writes"
    insp = sa.inspect(engine)
    assert "purchases" in insp.get_table_names() and insp.get_view_names() == ["orders"]
    with engine.begin() as conn:  # old code through the old name, new code through the new one
        conn.execute(sa.text("INSERT INTO orders (id, amount, note) VALUES (5001, 1.50, 'old code')"))
        conn.execute(sa.text("UPDATE orders SET note = 'updated by old code' WHERE id = 3"))
        conn.execute(sa.text("INSERT INTO purchases (id, amount, note) VALUES (5002, 2.50, 'new code')"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM purchases WHERE id = 5001")).scalar() == "old code"
        assert conn.execute(sa.text("SELECT note FROM purchases WHERE id = 3")).scalar() == "updated by old code"
        assert conn.execute(sa.text("SELECT note FROM orders WHERE id = 5002")).scalar() == "new code"
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM orders WHERE id IN (5001, 5002)"))
        conn.execute(sa.text("UPDATE purchases SET note = 'n3' WHERE id = 3"))

    rollback_schema_change(spec, control_store, "tester")
    assert sa.inspect(engine).get_view_names() == []
    assert snapshot_table(engine, "orders", ("id",)) == before

    report = run_schema_change(str(path), control, options, restart=True)
    assert report["ran"][-2:] == ["stop_sync", "drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    insp = sa.inspect(engine)
    assert insp.get_view_names() == [] and "orders" not in insp.get_table_names()
    after = snapshot_table(engine, "purchases", ("id",))
    assert after.rows == before.rows and after.columns == before.columns


@pytest.mark.parametrize(("kind", "says"), [("mariadb", "commits each DDL"), ("sqlite", "read-only")])
def test_engines_without_an_atomic_rename_and_view_are_refused(
    kind: str, says: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=10)
    with pytest.raises(SpecError) as caught:
        check_change(make_spec(url, operations=[RENAME]))
    assert caught.value.field == "operations.0.op" and says in caught.value.problem, caught.value
    assert "orders" in sa.inspect(engine).get_table_names()


def test_a_taken_name_is_refused(database_url: Callable[[str], str]) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE purchases (id int)"))
    with pytest.raises(SpecError) as caught:
        check_change(make_spec(url, operations=[RENAME]))
    assert caught.value.field == "operations.0.to" and "exists already" in caught.value.problem
