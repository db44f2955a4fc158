"""The terminal views: ``plan`` as a tree and ``status`` as tables, drawn from the same data as
``--json`` (so they cannot disagree); piped output stays plain text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shiftover import cli
from shiftover.cli import app
from shiftover.control.store import open_store
from shiftover.phases import Phase
from shiftover.plan import plan_data
from shiftover.render import plan_tree, status_view
from shiftover.spec import load_spec
from shiftover.status import status_data

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders.yaml"


def drawn(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_plan_tree_has_a_branch_per_stage_with_its_marks() -> None:
    data = plan_data(load_spec(EXAMPLE))
    text = drawn(plan_tree(data))
    assert text.startswith("Migration orders-v2: orders")
    for i, stage in enumerate(data["stages"], 1):
        assert f"{i:>2}. {stage['name']} -> {stage['reaches']}" in text
    switch = next(line for line in text.splitlines() if "switch_writes" in line)
    assert "APPROVAL" in switch
    drop = next(line for line in text.splitlines() if ". drop " in line)
    assert "IRREVERSIBLE" in drop and "APPROVAL" in drop
    assert text.count("├── ") + text.count("└── ") >= len(data["stages"]) * 3  # does + undo at least


def test_status_tables_show_routing_approvals_and_history(tmp_path: Path) -> None:
    control = f"sqlite:///{tmp_path}/control.db"
    store = open_store(control)
    store.register("orders-v2", {"name": "orders-v2"})
    store.transition("orders-v2", Phase.DUAL_WRITING, "alice", "go")
    text = drawn(status_view(status_data(control, "orders-v2")))
    assert "orders-v2: dual_writing" in text
    assert "writes old_only, reads 0% new, shadow off" in text
    assert "recent phases" in text and "dual_writing" in text and "alice" in text
    history = drawn(status_view(status_data(control, "orders-v2", history=True)))
    assert "audit log" in history and "phase=dual_writing" in history
    assert drawn(status_view(status_data(f"sqlite:///{tmp_path}/empty.db"))).startswith("no migrations in ")


@pytest.mark.parametrize("terminal", [True, False])
def test_the_cli_draws_for_a_terminal_and_prints_plain_text_for_a_pipe(terminal: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli, "_terminal", lambda: terminal)
    result = CliRunner().invoke(app, ["plan", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert ("├── " in result.output) is terminal
    assert "switch_writes" in result.output


def test_plan_of_a_route_spec_prints_its_stages_and_json() -> None:
    spec = str(EXAMPLE.with_name("orders-routes.yaml"))
    text = CliRunner().invoke(app, ["plan", spec])
    assert text.exit_code == 0, text.output
    data = CliRunner().invoke(app, ["plan", spec, "--json"])
    assert data.exit_code == 0, data.output
    plan = json.loads(data.output)
    assert plan["kind"] == "route" and plan["stages"]
    for i, stage in enumerate(plan["stages"], 1):
        assert f"{i:>2}. {stage['name']} [{stage['type']}]" in text.output
    assert any(s["approval"] for s in plan["stages"]) and any(not s["reversible"] for s in plan["stages"])
