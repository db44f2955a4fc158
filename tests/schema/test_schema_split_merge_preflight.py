"""A bad split_column or merge_columns is refused by its spec field before any DDL: in the spec
itself (no server), and against the live table on every engine (a missing old column, a new column
that exists, an expression the engine cannot plan, an ``up`` that ignores an old column or reads a
new one, a ``down`` that ignores a new column or reads an old one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_schema_split_merge import (
    ENGINES,
    FIRST,
    JOIN,
    LAST,
    base_spec,
    create_people,
    merge_operation,
    split_operation,
)

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import run_schema_change
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import parse_expand_contract


def into(kind: str, first_up: str | None = None, last_up: str | None = None, **last: Any) -> list[dict[str, Any]]:
    return [
        {"name": "first_name", "type": "varchar(60)", "up": first_up or FIRST[kind].format(c="full_name")},
        {"name": "last_name", "type": "varchar(60)", "up": last_up or LAST[kind].format(c="full_name")} | last,
    ]


SPEC_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    (split_operation("sqlite", into=into("sqlite", name="full_name")), "operations.0", "must not name `column`"),
    (split_operation("sqlite", into=into("sqlite", name="first_name")), "operations.0", "names a column twice"),
    (split_operation("sqlite", into=into("sqlite")[:1]), "operations.0.into", "at least 2"),
    (split_operation("sqlite", column="id"), "(spec)", "cannot be changed in place"),
    (merge_operation("sqlite", to="last_name"), "operations.0", "must differ from `columns`"),
    (merge_operation("sqlite", down={"first_name": "full_name"}), "operations.0", "missing: ['last_name']"),
    (merge_operation("sqlite", columns=["first_name", "first_name"]), "operations.0", "names a column twice"),
]


@pytest.mark.parametrize(("operation", "field", "says"), SPEC_ERRORS)
def test_a_bad_split_or_merge_is_refused_by_the_spec(operation: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        base_spec("sqlite:///unused.db", operation, "bad")
    assert caught.value.field == field and says in caught.value.problem, caught.value


def test_a_split_and_another_operation_creating_the_same_column_are_refused() -> None:
    spec = base_spec("sqlite:///unused.db", split_operation("sqlite"), "bad").model_dump(mode="json", by_alias=True)
    spec["operations"].append({"op": "add_column", "column": "last_name", "type": "int"})
    with pytest.raises(SpecError) as caught:
        parse_expand_contract(spec)
    assert caught.value.field == "(spec)" and "create the same column" in caught.value.problem


def split_errors(kind: str) -> list[tuple[dict[str, Any], str, str]]:
    join = JOIN[kind].format(a="first_name", b="last_name")
    return [
        (split_operation(kind, column="fullname"), "operations.0.column", "no column 'fullname'"),
        (
            split_operation(kind, into=into(kind, name="note")),
            "operations.0.into.1.name",
            "has a column 'note' already",
        ),
        (split_operation(kind, into=into(kind, first_up="upper(fulname)")), "operations.0.into.0.up", "fulname"),
        (
            split_operation(kind, into=into(kind, last_up="'x'")),
            "operations.0.into.1.up",
            "does not read the old column 'full_name'",
        ),
        (
            split_operation(
                kind, into=into(kind, first_up=f"coalesce(last_name, {FIRST[kind].format(c='full_name')})")
            ),
            "operations.0.into.0.up",
            "reads the new column(s)",
        ),
        (split_operation(kind, down="first_name"), "operations.0.down", "does not read the new column 'last_name'"),
        (split_operation(kind, down="full_name"), "operations.0.down", "does not read the new column 'first_name'"),
        (split_operation(kind, down=f"coalesce({join}, full_name)"), "operations.0.down", "reads the old column(s)"),
    ]


def merge_errors(kind: str) -> list[tuple[dict[str, Any], str, str]]:
    first, last = FIRST[kind].format(c="full_name"), LAST[kind].format(c="full_name")
    return [
        (
            merge_operation(kind, columns=["first_name", "surname"], down={"first_name": first, "surname": last}),
            "operations.0.columns.1",
            "no column 'surname'",
        ),
        (merge_operation(kind, to="note"), "operations.0.to", "has a column 'note' already"),
        (merge_operation(kind, up="first_name"), "operations.0.up", "does not read the old column 'last_name'"),
        (
            merge_operation(kind, up="coalesce(full_name, first_name, last_name)"),
            "operations.0.up",
            "reads the new column(s)",
        ),
        (
            merge_operation(kind, down={"first_name": first, "last_name": "'x'"}),
            "operations.0.down.last_name",
            "does not read the new column 'full_name'",
        ),
        (
            merge_operation(kind, down={"first_name": f"coalesce({first}, last_name)", "last_name": last}),
            "operations.0.down.first_name",
            "reads the old column(s)",
        ),
        (
            merge_operation(kind, down={"first_name": "substr(ful_name, 1)", "last_name": last}),
            "operations.0.down.first_name",
            "ful_name",
        ),
    ]


@pytest.mark.parametrize("kind", ENGINES)
def test_a_bad_split_is_refused_by_its_field_before_any_ddl(kind: str, database_url: Callable[[str], str]) -> None:
    url = database_url(kind)
    engine = create_people(url, ("full_name",))
    before = snapshot_table(engine, "people", ("id",))
    check_change(base_spec(url, split_operation(kind), "good"))  # the good one passes
    problems = []
    for operation, field, says in split_errors(kind):
        with pytest.raises(SpecError) as caught:
            check_change(base_spec(url, operation, "bad"))
        if caught.value.field != field or says not in caught.value.problem:
            problems.append((field, says, str(caught.value)))
    assert problems == []
    assert snapshot_table(engine, "people", ("id",)) == before


@pytest.mark.parametrize("kind", ENGINES)
def test_a_bad_merge_is_refused_by_its_field_before_any_ddl(kind: str, database_url: Callable[[str], str]) -> None:
    url = database_url(kind)
    engine = create_people(url, ("first_name", "last_name"))
    before = snapshot_table(engine, "people", ("id",))
    check_change(base_spec(url, merge_operation(kind), "good"))
    problems = []
    for operation, field, says in merge_errors(kind):
        with pytest.raises(SpecError) as caught:
            check_change(base_spec(url, operation, "bad"))
        if caught.value.field != field or says not in caught.value.problem:
            problems.append((field, says, str(caught.value)))
    assert problems == []
    assert snapshot_table(engine, "people", ("id",)) == before


def test_a_run_of_a_bad_split_changes_nothing(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url("postgres")
    engine = create_people(url, ("full_name",))
    before = snapshot_table(engine, "people", ("id",))
    bad = base_spec(url, split_operation("postgres", down="first_name"), "bad")
    path = tmp_path / "change.yaml"
    path.write_text(yaml.safe_dump(bad.model_dump(mode="json", by_alias=True)))
    with pytest.raises(SpecError) as caught:
        run_schema_change(str(path), str(control_store.engine.url), RunOptions(auto_approve=True))
    assert caught.value.field == "operations.0.down"
    assert snapshot_table(engine, "people", ("id",)) == before  # no column, no trigger
