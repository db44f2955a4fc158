"""Two schema changes on one table at once: the second is refused before any DDL, naming the first,
even when its spec spells the table another way; once the first is rolled back the second runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import create_orders, make_spec, respelt, spec_file

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.errors import ConcurrentChangeError
from shiftover.schema.snapshot import snapshot_table

# a second change on the same table: drop note (and nothing the first one touches)
SECOND = [{"op": "add_column", "column": "source", "type": "varchar(10)"}, {"op": "drop_column", "column": "note"}]


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_a_second_change_on_a_table_is_refused_until_the_first_ends(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=100)
    first = make_spec(url)
    second = make_spec(url, name="orders-second", database=respelt(url, tmp_path), operations=SECOND)
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    run_schema_change(str(spec_file(tmp_path, first, "first")), control, options, stop_after="sync")
    expanded = snapshot_table(engine, "orders", ("id",))

    second_path = str(spec_file(tmp_path, second, "second"))
    with pytest.raises(ConcurrentChangeError, match=r"'orders-cents' \(phase dual_writing\)"):
        run_schema_change(second_path, control, options, stop_after="validate")
    assert snapshot_table(engine, "orders", ("id",)) == expanded
    assert not control_store.has_migration(second.name)  # a refused first run leaves no migration

    rollback_schema_change(first, control_store, "test")
    report = run_schema_change(second_path, control, options, stop_after="validate")
    assert report["ran"] == ["expand", "sync", "backfill", "validate"]
    # and now the first, restarted, is the one refused
    with pytest.raises(ConcurrentChangeError, match="orders-second"):
        run_schema_change(str(spec_file(tmp_path, first, "first")), control, options, restart=True)
    assert read_state(control_store, first.name).phase is Phase.ROLLED_BACK


def table_move(source: dict[str, Any], target_url: str, tmp_path: Path, name: str = "orders-move") -> str:
    """A table move of ``source`` into a new table it creates at ``target_url``; its spec's path."""
    spec = {
        "name": name,
        "source": source,
        "target": {"url": target_url, "table": "orders"},
        "key": "id",
        "backfill": {"create_target": True},
        "approvals": {"auto": True},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_table_move_of_a_table_a_schema_change_holds_is_refused_before_it_writes(  # type: ignore[no-untyped-def]
    kind: str, prefect_harness: None, database_url, control_store: ControlStore, tmp_path: Path
) -> None:
    """The move would plan its mapping without the columns the change adds, and its decommission would
    drop the table the change works on: its dual-write stage is refused, naming the change, before
    it creates the new table or flips a flag."""
    from shiftover.flags.routing import WriteMode, read_routing
    from shiftover.flows.dual_write import dual_write

    url, new_url = database_url(kind), database_url("sqlite")
    create_orders(url, rows=50)
    change = make_spec(url)
    control = str(control_store.engine.url)
    run_schema_change(
        str(spec_file(tmp_path, change, "change")), control, RunOptions(auto_approve=True), stop_after="sync"
    )

    move = table_move(respelt(url, tmp_path), new_url, tmp_path)
    with pytest.raises(
        ConcurrentChangeError, match=r"held by the unfinished migration 'orders-cents' \(phase dual_writing\)"
    ):
        dual_write(move, control)
    assert "orders" not in sa.inspect(get_engine(new_url)).get_table_names()
    assert read_routing(control_store.engine, "orders-move").writes is WriteMode.OLD_ONLY
    assert control_store.audit_entries("orders-move", action="schema_table") == []


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_schema_change_on_a_table_a_move_holds_is_refused_on_either_side(  # type: ignore[no-untyped-def]
    kind: str, prefect_harness: None, database_url, control_store: ControlStore, tmp_path: Path
) -> None:
    """A move in dual-write holds its old table and the new one it created: a schema change on
    either is refused before any DDL; once the move is rolled back the change runs."""
    from shiftover.flows.dual_write import dual_write
    from shiftover.flows.rollback import rollback

    old_url, new_url = database_url(kind), database_url("sqlite")
    old = create_orders(old_url, rows=50)
    control = str(control_store.engine.url)
    move = table_move({"url": old_url, "table": "orders"}, new_url, tmp_path)
    dual_write(move, control, flag_ttl_seconds=0)
    claims = control_store.audit_entries("orders-move", action="schema_table")
    assert [len(c["detail"]["identities"]) for c in claims] == [1, 2]  # the old table, then the new one created

    for side, url in (("old", old_url), ("new", new_url)):
        engine = get_engine(url)
        before = snapshot_table(engine, "orders", ("id",))
        change = make_spec(url, name=f"change-{side}")
        path = str(spec_file(tmp_path, change, f"change-{side}"))
        with pytest.raises(ConcurrentChangeError, match=r"'orders-move' \(phase dual_writing\)"):
            run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="sync")
        assert snapshot_table(engine, "orders", ("id",)) == before
        assert not control_store.has_migration(change.name)  # a refused first run leaves no migration

    rollback(move, control, reason="the schema change goes first")
    path = str(spec_file(tmp_path, make_spec(old_url, name="change-old"), "change-old"))
    assert run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="sync")["ran"] == [
        "expand",
        "sync",
    ]
    assert "amount_cents" in [c["name"] for c in sa.inspect(old).get_columns("orders")]
