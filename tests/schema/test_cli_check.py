"""``shiftover check`` on an expand/contract spec: the run's checks before its first DDL, every row's
``up`` computed, and the table's holder in the control store; it reads and writes nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import create_orders, make_spec, respelt, spec_file
from typer.testing import CliRunner

from shiftover.cli import app
from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import run_schema_change
from shiftover.schema.snapshot import snapshot_table

runner = CliRunner()


def test_check_reads_the_table_and_creates_no_control_store(tmp_path: Path, database_url) -> None:  # type: ignore[no-untyped-def]
    url = database_url("sqlite")
    engine = create_orders(url, rows=30)
    before = snapshot_table(engine, "orders", ("id",))
    control = tmp_path / "nowhere" / "control.db"
    result = runner.invoke(
        app, ["check", str(spec_file(tmp_path, make_spec(url))), "--control-url", f"sqlite:///{control}"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: orders, key ['id'] (orders-cents)")
    assert "expand adds, nullable: amount_cents bigint, channel varchar(20)" in result.output
    assert "every up computed on 30 row(s) in 1 batch(es)" in result.output
    assert "does not exist yet" in result.output and not control.parent.exists()
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_check_names_the_row_an_up_fails_on(database_url: Callable[[str], str], tmp_path: Path) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=10)
    before = snapshot_table(engine, "orders", ("id",))
    move = {"op": "change_column", "column": "amount", "to": "amount_cents", "type": "bigint"}
    spec = make_spec(url, operations=[{**move, "up": "round(amount * 100 / (id - 8))", "down": "amount_cents / 100.0"}])
    result = runner.invoke(
        app, ["check", str(spec_file(tmp_path, spec)), "--control-url", f"sqlite:///{tmp_path}/c.db"]
    )
    assert result.exit_code == 2, result.output
    assert "operations.0.up" in result.output and "key 8" in result.output and "division by zero" in result.output
    assert snapshot_table(engine, "orders", ("id",)) == before


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_check_names_the_unfinished_change_that_holds_the_table(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=20)
    first = make_spec(url)
    control = str(control_store.engine.url)
    first_path = str(spec_file(tmp_path, first, "first"))
    run_schema_change(first_path, control, RunOptions(auto_approve=True), stop_after="sync")
    expanded = snapshot_table(engine, "orders", ("id",))

    second = make_spec(
        url,
        name="orders-second",
        database=respelt(url, tmp_path),
        operations=[{"op": "add_column", "column": "source", "type": "varchar(10)"}],
    )
    held = runner.invoke(app, ["check", str(spec_file(tmp_path, second, "second")), "--control-url", control])
    assert held.exit_code == 1, held.output
    assert held.output.startswith("FAILED:")
    assert "held by the unfinished change 'orders-cents' (phase dual_writing)" in held.output

    resumed = runner.invoke(app, ["check", first_path, "--control-url", control])
    assert resumed.exit_code == 0, resumed.output
    assert "at phase dual_writing" in resumed.output and "`shiftover run` resumes at backfill" in resumed.output
    assert snapshot_table(engine, "orders", ("id",)) == expanded
    assert not control_store.has_migration("orders-second")
