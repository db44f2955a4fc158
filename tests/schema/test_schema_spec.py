"""An expand/contract spec is refused by its field before anything connects (pure logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_spec

from shiftover.errors import SpecError
from shiftover.schema.spec import load_expand_contract

RENAME = {"op": "rename_column", "column": "amount", "type": "int"}


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        ({"key": []}, "key", "at least one key column"),
        ({"key": ["id", "id"]}, "key", "key columns repeat"),
        ({"operations": [RENAME | {"to": "a"}, RENAME | {"to": "b"}]}, "(spec)", "change the same column"),
        ({"operations": [{"op": "zap"}]}, "operations.0.op", "unknown operation"),
        ({"operations": [{"op": "drop_column", "column": "amount"}]}, "operations.0.op", "not supported yet"),
        ({"operations": [RENAME | {"to": "a", "extra": 1}]}, "operations.0.extra", "unknown field"),
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
