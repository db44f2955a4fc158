"""rename_table on PostgreSQL and MariaDB: the table renamed and a view of the old name in its
place with no moment in which the old name is missing (PostgreSQL: one transaction; MariaDB: a view
staged beside the table and swapped in by one multi-table RENAME TABLE), so old code (old name) and
new code (new name) read and write the same rows; the view goes only in the contract's last step,
after both approvals; a rollback before then renames the table back exactly, from every stage and
after a crash between MariaDB's statements. SQLite is refused by the preflight, saying why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.schema.columns import Target, rename_table, rollback_expansion, table_rename
from shiftover.schema.engines import schema_dialect
from shiftover.schema.plan import build_schema_plan
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table

RENAME = {"op": "rename_table", "to": "purchases"}
ENGINES = ["postgres", "mariadb"]


@pytest.mark.parametrize("kind", ENGINES)
def test_renames_behind_a_view_rolls_back_exactly_and_contracts(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[RENAME])
    path = spec_file(tmp_path, spec, "rename")
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


def test_sqlite_without_an_updatable_view_is_refused(database_url: Callable[[str], str]) -> None:
    url = database_url("sqlite")
    engine = create_orders(url, rows=10)
    with pytest.raises(SpecError) as caught:
        check_change(make_spec(url, operations=[RENAME]))
    assert caught.value.field == "operations.0.op" and "read-only" in caught.value.problem, caught.value
    assert "orders" in sa.inspect(engine).get_table_names()


@pytest.mark.parametrize("kind", ENGINES)
def test_a_taken_name_is_refused(kind: str, database_url: Callable[[str], str]) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE purchases (id int)"))
    with pytest.raises(SpecError) as caught:
        check_change(make_spec(url, operations=[RENAME]))
    assert caught.value.field == "operations.0.to" and "exists already" in caught.value.problem


@pytest.mark.parametrize("kind", ENGINES)
def test_rename_and_its_rollback_under_a_writer_through_the_old_name(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """Old code writing through ``orders`` the whole time, while the table is renamed behind a view,
    renamed back by the rollback, and renamed again: no write fails (a statement that waited for the
    rename's lock looks its name up again once it has the lock), and every acknowledged insert is in
    the table at the end."""
    import threading
    import time

    url = database_url(kind)
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[RENAME], lock={"timeout_ms": 200, "attempts": 100, "backoff_ms": 10})
    path = spec_file(tmp_path, spec, "rename")
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
    print(f"rename under a writer ({kind}): {len(acked)} writes through the old name, 0 failed; marks {marks}")


@pytest.mark.parametrize("kind", ENGINES)
def test_rollback_from_each_stage_before_contract_restores_the_table(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=200)
    spec = make_spec(url, operations=[RENAME])
    path = spec_file(tmp_path, spec, "rename")
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    before = snapshot_table(engine, "orders", ("id",))
    names = [s.name for s in build_schema_plan(spec).stages]
    reversible = names[: names.index("stop_sync")]
    assert reversible[0] == "expand" and reversible[-1] == "switch_writes"
    for stage in reversible:
        report = run_schema_change(str(path), control, options, stop_after=stage, restart=True)
        assert report["ran"][-1] == stage, report
        assert sa.inspect(engine).get_view_names() == ["orders"], stage
        rollback_schema_change(spec, control_store, "tester")
        insp = sa.inspect(engine)
        assert (insp.get_view_names(), "purchases" in insp.get_table_names()) == ([], False), stage
        assert snapshot_table(engine, "orders", ("id",)) == before, stage


@pytest.mark.parametrize("done", [1, 2, 3])
def test_mariadb_a_crash_between_the_rename_statements_is_resumed_or_rolled_back(
    done: int, database_url: Callable[[str], str]
) -> None:
    """MariaDB commits each statement alone: a process killed after ``done`` of them leaves its
    placeholder, staging view or parked view. The old name works throughout; a rollback leaves the
    table exactly as it was and no view; a re-run passes the preflight and completes the rename."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=50)
    spec = make_spec(url, operations=[RENAME])
    target = Target.of(engine, spec)
    statements = schema_dialect(engine).rename_table(table_rename(target, "purchases"))
    before = snapshot_table(engine, "orders", ("id",))

    def crash_after(n: int) -> None:
        with engine.connect() as conn:
            for statement in statements[:n]:
                conn.exec_driver_sql(statement)
            conn.execute(sa.text("INSERT INTO orders (id, amount, note) VALUES (900, 9.00, 'between')"))
            conn.execute(sa.text("DELETE FROM orders WHERE id = 900"))
            conn.commit()

    crash_after(done)
    assert sa.inspect(engine).get_view_names() != []  # something was left
    rollback_expansion(target, spec)
    assert sa.inspect(engine).get_view_names() == []
    assert snapshot_table(engine, "orders", ("id",)) == before

    crash_after(done)
    check_change(spec)  # the stand-in is this change's own: taken over, not refused
    rename_table(target, spec)
    insp = sa.inspect(engine)
    assert insp.get_view_names() == ["orders"] and "orders" not in insp.get_table_names()
    after = snapshot_table(engine, "purchases", ("id",))
    assert after.rows == before.rows and after.columns == before.columns


def test_mariadb_a_crash_inside_the_rollback_is_rolled_back_again(database_url: Callable[[str], str]) -> None:
    url = database_url("mariadb")
    engine = create_orders(url, rows=50)
    spec = make_spec(url, operations=[RENAME])
    target = Target.of(engine, spec)
    before = snapshot_table(engine, "orders", ("id",))
    rename_table(target, spec)
    swap_back = schema_dialect(engine).unrename_table(table_rename(target, "purchases"))[0]
    with engine.connect() as conn:
        conn.exec_driver_sql(swap_back)  # killed before its DROP VIEW
    assert sa.inspect(engine).get_view_names() == ["so_view_orders"]
    rollback_expansion(target, spec)
    assert sa.inspect(engine).get_view_names() == []
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_mariadb_plan_ddl_prints_the_swap(monkeypatch, database_url) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from shiftover.cli import app
    from shiftover.connect import dispose_engines

    dispose_engines()  # engines are cached per ${reference}
    url = database_url("mariadb")
    create_orders(url, rows=5)
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", url)
    example = Path(__file__).parents[2] / "examples" / "expand_rename_table.yaml"
    result = CliRunner().invoke(app, ["plan", str(example), "--ddl"])
    assert result.exit_code == 0, result.output
    forward, rollback = result.output.split("-- rollback")
    assert "RENAME TABLE purchases TO so_parked_orders, orders TO purchases, so_view_orders TO orders" in (forward)
    assert "RENAME TABLE orders TO so_view_orders, purchases TO orders" in rollback
    assert "refused" not in result.output
    assert sa.inspect(get_engine(url)).get_view_names() == []  # plan changes nothing
