"""Before expand, every existing row's ``up`` is computed (read only): an ``up`` that fails on some
row would fail the application's writes of it once the sync triggers run it, and stop the backfill
with the triggers live. The refusal names the spec field, the row's key and the engine's reason,
and nothing is changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.errors import SpecError
from shiftover.schema.columns import Target
from shiftover.schema.dry_run import check_ups_on_rows
from shiftover.schema.snapshot import snapshot_table

# An up that fails on one value, per engine. SQLite's division by zero is NULL, not an error, but
# its JSON functions raise on malformed text; MariaDB's SELECT only warns where a strict-mode write
# (the trigger's) fails.
FAILING_UP = {
    "postgres": ("round(100 / amount)", "amount = 0"),
    "mariadb": ("round(100 / amount)", "amount = 0"),
    "sqlite": (
        "round(amount * 100) + CASE WHEN note LIKE '{%' THEN json_extract(note, '$.extra') ELSE 0 END",
        "note = '{broken'",
    ),
}
BAD_ROWS = (1234, 2500)


def change_with_up(url: str, up: str) -> object:
    spec = make_spec(url)
    operations = [op.model_dump(by_alias=True, exclude_none=True) for op in spec.operations]
    operations[0]["up"] = up
    return make_spec(url, operations=operations)


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_an_up_that_fails_on_a_row_is_refused_naming_the_field_and_the_first_such_row(
    kind: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    engine = create_orders(url)
    up, bad = FAILING_UP[kind]
    spec = change_with_up(url, up)
    target = Target.of(engine, spec)  # type: ignore[arg-type]
    assert check_ups_on_rows(target, spec).rows == 3_000  # type: ignore[arg-type]  # no bad row yet: passes
    with engine.begin() as conn:
        for key in BAD_ROWS:
            conn.execute(sa.text(f"UPDATE orders SET {bad} WHERE id = :k"), {"k": key})
    before = snapshot_table(engine, "orders", ("id",))
    with pytest.raises(SpecError, match=r"spec field 'operations\.0\.up': .* fails on the row with key 1234 \("):
        check_ups_on_rows(target, spec)  # type: ignore[arg-type]
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_the_flow_refuses_it_before_expand_changes_anything(
    database_url: Callable[[str], str], prefect_harness: None, tmp_path: Path
) -> None:
    from shiftover.control.store import open_store
    from shiftover.flows.expand import expand_contract

    url = database_url("postgres")
    engine = create_orders(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE id = 1234"))
    spec = change_with_up(url, "round(100 / amount)")
    path = spec_file(tmp_path, spec, "spec")  # type: ignore[arg-type]
    before = snapshot_table(engine, "orders", ("id",))
    control = f"sqlite:///{tmp_path / 'control.db'}"
    with pytest.raises(SpecError, match=r"operations\.0\.up.*key 1234.*division by zero"):
        expand_contract(str(path), control, auto_approve=True)
    assert snapshot_table(engine, "orders", ("id",)) == before  # no column, no trigger, no index
    store = open_store(control)  # nor a migration holding the table: another change may take it
    assert not store.has_migration(spec.name) and store.audit_entries(spec.name) == []
    with engine.begin() as conn:  # the application's write of that value still works
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE id = 99"))
