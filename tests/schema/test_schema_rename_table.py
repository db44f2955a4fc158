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


def test_postgres_rename_and_its_rollback_under_a_writer_through_the_old_name(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """Old code writing through ``orders`` the whole time, while the table is renamed behind a view,
    renamed back by the rollback, and renamed again: no write fails (a statement that waited for the
    rename's lock looks its name up again once it has the lock), and every acknowledged insert is in
    the table at the end."""
    import threading
    import time

    url = database_url("postgres")
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[RENAME], lock={"timeout_ms": 200, "attempts": 100, "backoff_ms": 10})
    path = tmp_path / "rename.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    stop, acked, errors = threading.Event(), [], []

    def old_code() -> None:
        writer = sa.create_engine(url, pool_size=1)
        key = 10_000
        with writer.connect() as conn:
            while not stop.is_set():
                key += 1
                try:
                    with conn.begin():
                        conn.execute(
                            sa.text("INSERT INTO orders (id, amount, note) VALUES (:k, 1.25, 'old code')"), {"k": key}
                        )
                        conn.execute(
                            sa.text("UPDATE orders SET note = :n WHERE id = :i"), {"n": f"w{key}", "i": key % 300 + 1}
                        )
                    acked.append(key)
                except sa.exc.DBAPIError as error:  # asserted empty below
                    errors.append(str(error.orig).splitlines()[0])
                time.sleep(0.002)
        writer.dispose()

    thread = threading.Thread(target=old_code)
    thread.start()
    try:
        while len(acked) < 20:
            time.sleep(0.01)
        marks = [len(acked)]
        run_schema_change(str(path), control, options, stop_after="switch_writes")
        marks.append(len(acked))
        rollback_schema_change(spec, control_store, "tester")
        marks.append(len(acked))
        run_schema_change(str(path), control, options, restart=True, stop_after="switch_writes")
        time.sleep(0.3)
        marks.append(len(acked))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == [], errors[:5]
    assert marks == sorted(set(marks)), marks  # the writer went on through every step
    with engine.connect() as conn:
        present = {r[0] for r in conn.execute(sa.text("SELECT id FROM purchases WHERE id > 10000"))}
    assert present == set(acked)
    print(f"rename under a writer: {len(acked)} writes through the old name, 0 failed; after each step {marks}")
