"""An expand/contract spec is refused by its field before anything connects (pure logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_spec

from shiftover.errors import SpecError
from shiftover.schema.spec import load_expand_contract

RENAME = {"op": "rename_column", "column": "amount", "type": "int"}
IX = {"op": "create_index", "name": "ix", "columns": ["note"]}
FK = {"op": "add_foreign_key", "name": "fk", "columns": ["cid"], "ref_table": "c", "ref_columns": ["id"]}


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        ({"key": []}, "key", "at least one key column"),
        ({"key": ["id", "id"]}, "key", "key columns repeat"),
        ({"operations": [RENAME | {"to": "a"}, RENAME | {"to": "b"}]}, "(spec)", "change the same column"),
        ({"operations": [{"op": "zap"}]}, "operations.0.op", "unknown operation"),
        ({"operations": [{"op": "add_unique", "column": "amount"}]}, "operations.0.op", "not supported yet"),
        ({"operations": [{"op": "split_column", "column": "amount"}]}, "operations.0.into", "Field required"),
        ({"operations": [RENAME | {"to": "a"}, {"op": "rename_table", "to": "t2"}]}, "(spec)", "only operation"),
        ({"operations": [RENAME | {"to": "a", "extra": 1}]}, "operations.0.extra", "unknown field"),
        ({"operations": [{"op": "create_index", "name": "ix", "columns": []}]}, "operations.0.columns", "at least 1"),
        ({"operations": [IX, IX | {"columns": ["amount"]}]}, "(spec)", "of the same name"),
        ({"operations": [{"op": "set_not_null", "column": "a"}] * 2}, "(spec)", "name the same column"),
        ({"operations": [FK | {"ref_columns": ["id", "x"]}]}, "operations.0", "as many columns"),
        ({"operations": [{"op": "add_check", "name": "ck"}]}, "operations.0.expression", "required"),
        ({"backfill": {"nice_ratio": -0.5}}, "backfill.nice_ratio", "greater than or equal to 0"),
        ({"backfill": {"target_chunk_seconds": 0}}, "backfill.target_chunk_seconds", "greater than 0"),
        ({"retention_hours": -1}, "retention_hours", "greater than or equal to 0"),
    ],
)
def test_a_bad_spec_names_its_field(edit: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        make_spec("sqlite:///unused.db", **edit)
    assert caught.value.field == field and says in caught.value.problem, caught.value


def test_a_spec_file_that_is_not_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: expand_contract\noperations: [\n")
    with pytest.raises(SpecError) as caught:
        load_expand_contract(path)
    assert caught.value.field == "(file)" and "not valid YAML" in caught.value.problem


def test_every_new_operation_parses_and_lands_where_the_plan_runs_it() -> None:
    ops = [
        IX,
        {"op": "add_check", "name": "ck", "expression": "amount >= 0"},
        {"op": "set_not_null", "column": "amount"},
        FK,
        {"op": "drop_column", "column": "legacy"},
    ]
    spec = make_spec("sqlite:///unused.db", operations=ops)
    assert [i.name for i in spec.indexes] == ["ix"]
    assert [op.op for op in spec.constraints] == ["add_check", "set_not_null", "add_foreign_key"]
    assert [d.column for d in spec.drops] == ["legacy"] and spec.changes == () and spec.additions == ()
