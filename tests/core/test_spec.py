"""The spec model refuses bad declarations with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftover.errors import SpecError
from shiftover.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders.yaml"


def base(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "orders-v2",
        "source": {"url": "sqlite:///old.db", "table": "orders"},
        "target": {"url": "sqlite:///new.db", "table": "orders"},
        "key": ["id"],
    }
    spec.update(over)
    return spec


def test_example_spec_loads() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "orders-v2"
    assert spec.key == ("id",)
    assert [g.name for g in spec.gates_for("validate")] == ["row_count", "checksum", "expectations"]
    assert spec.canary.steps == (1, 10, 50, 100)


def test_key_shorthand_and_column_shorthand() -> None:
    spec = parse_spec(base(key="id", columns=["id", {"name": "amount", "target": "amount_eur"}]))
    assert spec.key == ("id",)
    assert [c.target_name for c in spec.columns] == ["id", "amount_eur"]


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"gates": {"validate": ["row_count", "telepathy"]}}, "gates.validate.1.name", "unknown gate 'telepathy'"),
        ({"gates": {"liftoff": ["row_count"]}}, "gates", "unknown stage 'liftoff'"),
        ({"canary": {"steps": [1, 50, 10, 100]}}, "canary.steps", "must increase: 50 is followed by 10"),
        ({"canary": {"steps": [1, 10]}}, "canary.steps", "last canary step must be 100"),
        ({"target": {"url": "sqlite:///old.db", "table": "orders"}}, "(spec)", "identical to source"),
        ({"key": []}, "key", "at least one key column"),
        ({"columns": ["amount"]}, "(spec)", "key column(s) ['id'] must be listed"),
        ({"backfill": {"chunk_rows": 0}}, "backfill.chunk_rows", "greater than 0"),
        ({"backfill": {"lag_query": "select 1"}}, "backfill", "lag_query and lag_threshold go together"),
        ({"transform": "nocolon"}, "transform", "package.module:function"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"name": "has space"}, "name", "pattern"),
        ({"on_existing": "replace"}, "on_existing", "'fail', 'overwrite' or 'keep'"),
        ({"on_existing": "keep"}, "on_existing", "'keep' is not supported yet"),
        ({"on_existing": "overwrite", "validation": {"repair": False}}, "on_existing", "needs validation.repair"),
    ],
)
def test_bad_specs_name_field_and_problem(over: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(base(**over))
    assert err.value.field == field
    assert words in err.value.problem


def test_on_existing_defaults_to_fail_and_takes_overwrite() -> None:
    assert parse_spec(base()).on_existing == "fail"
    assert parse_spec(base(on_existing="overwrite")).on_existing == "overwrite"


def test_same_database_other_table_is_allowed() -> None:
    spec = parse_spec(base(target={"url": "sqlite:///old.db", "table": "orders_v2"}))
    assert spec.target.table == "orders_v2"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no spec file"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string")
    with pytest.raises(SpecError, match="mapping at the top level"):
        load_spec(scalar)


def test_transform_that_cannot_import() -> None:
    spec = parse_spec(base(transform="no_such_module_xyz:fn"))
    with pytest.raises(SpecError, match="cannot import"):
        spec.load_transform()


def test_another_kind_of_spec_is_named_not_reported_as_a_broken_table_move() -> None:
    """`shiftover check` or `run` on a route spec said "spec field 'source': Field required"."""
    with pytest.raises(
        SpecError, match=r"spec field 'kind': this is a kind: route spec, not a table move: .*route-move"
    ):
        parse_spec({"kind": "route", "name": "r"})
    with pytest.raises(SpecError, match=r"this is a kind: expand_contract spec, not a table move"):
        parse_spec({"kind": "expand_contract", "name": "e"})
    with pytest.raises(SpecError, match=r"spec field 'kind': unknown kind 'tabel': table \(the default\), route"):
        parse_spec({"kind": "tabel", "name": "t"})
    table = {
        "name": "m",
        "source": {"url": "sqlite:///a.db", "table": "t"},
        "target": {"url": "sqlite:///b.db", "table": "t"},
    }
    assert parse_spec({**table, "key": "id", "kind": "table"}) == parse_spec({**table, "key": "id"})
