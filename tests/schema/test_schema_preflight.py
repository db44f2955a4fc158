"""Hostile specs are refused by their field before any DDL: an unknown table, key or column, a new
column that exists already, and ``up``/``down`` SQL the engine cannot resolve (installed as a sync
trigger it would fail every application write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_spec

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import run_schema_change
from shiftover.schema.columns import Target
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ExpandContractSpec


def change(spec: ExpandContractSpec, **fields: Any) -> dict[str, Any]:
    return {"operations": [spec.operations[0].model_dump() | fields, spec.operations[1].model_dump()]}


BAD: list[tuple[str, Any, str]] = [
    ("database.table", lambda s: {"database": {"url": s.database.url, "table": "no_such_table"}}, "no table"),
    ("key", lambda s: {"key": ["idx"]}, "no column(s) ['idx']"),
    ("operations.0.column", lambda s: change(s, column="amt"), "no column 'amt'"),
    ("operations.0.to", lambda s: change(s, to="note"), "has a column 'note' already"),
    ("operations.0.up", lambda s: change(s, up="round(amnt * 100)"), "amnt"),
    ("operations.0.down", lambda s: change(s, down="amount_cents / / 100"), "refuses it"),
    ("operations.0.down", lambda s: change(s, down="amount_cent / 100.0"), "amount_cent"),
]


@pytest.mark.parametrize(("field", "edit", "says"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_spec_is_refused_by_its_field(
    orders: tuple[Target, ExpandContractSpec], field: str, edit: Any, says: str
) -> None:
    spec = orders[1]
    bad = make_spec(spec.database.url, **edit(spec))
    with pytest.raises(SpecError) as caught:
        check_change(bad)
    assert caught.value.field == field and says in caught.value.problem, caught.value


def test_a_run_refuses_before_any_ddl(
    orders: tuple[Target, ExpandContractSpec], control_store: ControlStore, tmp_path: Path
) -> None:
    target, spec = orders
    before = snapshot_table(target.engine, "orders", ("id",))
    bad = make_spec(spec.database.url, **change(spec, up="round(amnt * 100)"))
    path = tmp_path / "change.yaml"
    path.write_text(yaml.safe_dump(bad.model_dump(mode="json", by_alias=True)))
    with pytest.raises(SpecError) as caught:
        run_schema_change(str(path), str(control_store.engine.url), RunOptions(auto_approve=True))
    assert caught.value.field == "operations.0.up"
    assert snapshot_table(target.engine, "orders", ("id",)) == before  # no column, no trigger


def test_the_good_spec_passes(orders: tuple[Target, ExpandContractSpec]) -> None:
    target, spec = orders
    assert check_change(spec).qualified == target.qualified
