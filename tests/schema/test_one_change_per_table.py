"""Two schema changes on one table at once: the second is refused before any DDL, naming the first,
even when its spec spells the table another way; once the first is rolled back the second runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import create_orders, make_spec, respelt, spec_file

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
    assert read_state(control_store, second.name).phase is Phase.PLANNED
    assert read_state(control_store, second.name).completed == frozenset()

    rollback_schema_change(first, control_store, "test")
    report = run_schema_change(second_path, control, options, stop_after="validate")
    assert report["ran"] == ["expand", "sync", "backfill", "validate"]
    # and now the first, restarted, is the one refused
    with pytest.raises(ConcurrentChangeError, match="orders-second"):
        run_schema_change(str(spec_file(tmp_path, first, "first")), control, options, restart=True)
    assert read_state(control_store, first.name).phase is Phase.ROLLED_BACK
