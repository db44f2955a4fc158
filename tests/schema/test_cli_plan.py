"""``shiftover plan`` on an expand/contract spec prints the stages the evaluator runs; an
operation not supported yet is refused naming its spec field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shiftover.cli import app
from shiftover.schema.plan import build_schema_plan
from shiftover.schema.spec import load_expand_contract

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "expand_contract.yaml")
runner = CliRunner()


def test_plan_prints_the_stages_that_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", "sqlite:///unused.db")
    result = runner.invoke(app, ["plan", EXAMPLE])
    assert result.exit_code == 0, result.output
    names = [s.name for s in build_schema_plan(load_expand_contract(EXAMPLE))]
    assert [line.split()[1] for line in result.output.splitlines() if line[:3].strip().rstrip(".").isdigit()] == names
    assert "stop_sync        -> old_writes_stopped [APPROVAL, IRREVERSIBLE]" in result.output
    data = json.loads(runner.invoke(app, ["plan", EXAMPLE, "--json"]).output)
    assert [s["name"] for s in data["stages"]] == names and data["kind"] == "expand_contract"


def test_an_unsupported_operation_is_refused_by_its_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    text = Path(EXAMPLE).read_text().replace("op: add_column", "op: add_unique")
    spec.write_text(text)
    result = runner.invoke(app, ["plan", str(spec)])
    assert result.exit_code != 0
    assert "spec field 'operations.1.op': operation 'add_unique' is not supported yet" in result.output


def test_plan_ddl_prints_each_stage_statements_and_changes_nothing(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conftest import create_orders

    from shiftover.schema.snapshot import snapshot_table

    url = f"sqlite:///{tmp_path}/orders.db"
    engine = create_orders(url, rows=5)
    before = snapshot_table(engine, "orders", ("id",))
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", url)
    result = runner.invoke(app, ["plan", EXAMPLE, "--ddl"])
    assert result.exit_code == 0, result.output
    assert "ALTER TABLE orders ADD COLUMN amount_cents bigint NULL;" in result.output
    assert "CREATE TRIGGER IF NOT EXISTS so_sync_orders_amount_cents_upd AFTER UPDATE ON orders" in result.output
    assert "-- rollback" in result.output and "ALTER TABLE orders DROP COLUMN channel;" in result.output
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_plan_ddl_names_a_missing_table_by_its_field(tmp_path: Path) -> None:
    spec = tmp_path / "missing.yaml"
    text = Path(EXAMPLE).read_text().replace("${SHIFTOVER_DATABASE_URL}", f"sqlite:///{tmp_path}/empty.db")
    spec.write_text(text)
    result = runner.invoke(app, ["plan", str(spec), "--ddl"])
    assert result.exit_code != 0
    assert "spec field 'database.table': no table 'orders'" in result.output


@pytest.mark.parametrize(
    ("example", "constrain"),
    [
        ("expand_create_index.yaml", False),
        ("expand_add_check.yaml", True),
        ("expand_set_not_null.yaml", True),
        ("expand_add_foreign_key.yaml", True),
        ("expand_drop_column.yaml", False),
        ("expand_rename_table.yaml", False),
        ("expand_split_column.yaml", False),
        ("expand_merge_columns.yaml", False),
    ],
)
def test_each_operation_example_plans(example: str, constrain: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = str(Path(EXAMPLE).parent / example)
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", "sqlite:///unused.db")
    result = runner.invoke(app, ["plan", path, "--json"])
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in json.loads(result.output)["stages"]]
    assert ("constrain" in names) is constrain and names[0] == "expand"


def test_plan_ddl_shows_the_online_statements_on_postgres(monkeypatch, database_url) -> None:  # type: ignore[no-untyped-def]
    from conftest import create_orders

    from shiftover.connect import dispose_engines

    dispose_engines()  # engines are cached per ${reference}: an earlier test resolved it to SQLite
    url = database_url("postgres")
    create_orders(url, rows=5)
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", url)
    out = {}
    for example in (
        "expand_create_index.yaml",
        "expand_add_check.yaml",
        "expand_set_not_null.yaml",
        "expand_rename_table.yaml",
    ):
        result = runner.invoke(app, ["plan", str(Path(EXAMPLE).parent / example), "--ddl"])
        assert result.exit_code == 0, result.output
        out[example] = result.output
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_note ON orders (note)" in out["expand_create_index.yaml"]
    assert "DROP INDEX CONCURRENTLY IF EXISTS ix_orders_note" in out["expand_create_index.yaml"]
    assert "CHECK (amount >= 0) NOT VALID" in out["expand_add_check.yaml"]
    assert "VALIDATE CONSTRAINT ck_orders_amount_positive" in out["expand_add_check.yaml"]
    assert "DROP CONSTRAINT IF EXISTS ck_orders_amount_positive" in out["expand_add_check.yaml"].split("-- rollback")[1]
    assert "ALTER COLUMN amount SET NOT NULL" in out["expand_set_not_null.yaml"]
    assert "CREATE VIEW orders AS SELECT * FROM purchases" in out["expand_rename_table.yaml"]


@pytest.mark.parametrize(
    ("example", "columns", "new"),
    [
        ("expand_split_column.yaml", "full_name varchar(121)", ("first_name", "last_name")),
        ("expand_merge_columns.yaml", "first_name varchar(60), last_name varchar(60)", ("full_name",)),
    ],
)
def test_the_split_and_merge_examples_run_on_postgres(
    example: str, columns: str, new: tuple[str, ...], monkeypatch, database_url, control_store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The example as shipped: its DDL planned, then run to validate against a PostgreSQL table
    (values read back by plain SQL) and rolled back to exactly the table it found."""
    import sqlalchemy as sa

    from shiftover.connect import dispose_engines
    from shiftover.flows.context import RunOptions
    from shiftover.flows.expand import rollback_schema_change, run_schema_change
    from shiftover.schema.snapshot import snapshot_table

    dispose_engines()  # engines are cached per ${reference}: an earlier test resolved it elsewhere
    url = database_url("postgres")
    engine = sa.create_engine(url)
    names = [("Ada", "Lovelace"), ("Alan", "Turing"), (None, None)]
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE customers (id int PRIMARY KEY, {columns}, note text)"))
        for i, (first, last) in enumerate(names, 1):
            if "full_name" in columns:
                full = None if first is None else f"{first} {last}"
                conn.execute(sa.text("INSERT INTO customers (id, full_name) VALUES (:i, :f)"), {"i": i, "f": full})
            else:
                values = {"i": i, "a": first, "b": last}
                conn.execute(sa.text("INSERT INTO customers (id, first_name, last_name) VALUES (:i, :a, :b)"), values)
    before = snapshot_table(engine, "customers", ("id",))
    monkeypatch.setenv("SHIFTOVER_DATABASE_URL", url)
    path = str(Path(EXAMPLE).parent / example)
    result = runner.invoke(app, ["plan", path, "--ddl"])
    assert result.exit_code == 0, result.output
    assert all(f"ADD COLUMN {n} varchar" in result.output for n in new), result.output
    assert "CREATE OR REPLACE TRIGGER so_sync_customers_" in result.output

    report = run_schema_change(path, str(control_store.engine.url), RunOptions(), stop_after="validate")
    assert report["ran"] == ["expand", "sync", "backfill", "validate"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, full_name, first_name, last_name FROM customers ORDER BY id")).all()
    expected = [(i, None if a is None else f"{a} {b}", a, b) for i, (a, b) in enumerate(names, 1)]
    assert [tuple(r) for r in rows] == expected
    rollback_schema_change(load_expand_contract(path), control_store, "test")
    assert snapshot_table(engine, "customers", ("id",)) == before
    engine.dispose()
