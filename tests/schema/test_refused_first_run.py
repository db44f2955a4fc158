"""A first run refused before its first stage changed anything leaves the control store as it found
it: no migration row (so no ``planned`` name in ``shiftover status``), no audit entries, no lease.
Refused runs of a migration earlier runs created keep its row and history, and a run never removes a
migration another run holds. The control store is on the same kind of server as the table."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import create_orders, make_spec, respelt, spec_file

import shiftover.flows.expand as expand_flow
from shiftover.control.lease import acquire_lease, read_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.errors import LeaseHeldError, SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.schema.claim import CLAIM
from shiftover.schema.errors import ConcurrentChangeError
from shiftover.schema.spec import ExpandContractSpec

SECOND = [{"op": "add_column", "column": "source", "type": "varchar(10)"}, {"op": "drop_column", "column": "note"}]
OPTIONS = RunOptions(auto_approve=True)


def store_beside(kind: str, database_url: Callable[[str], str], tmp_path: Path) -> ControlStore:
    """A fresh control store on a server of ``kind`` (its own database or file)."""
    return open_store(f"sqlite:///{tmp_path}/control.db" if kind == "sqlite" else database_url(kind))


def bad_column(spec: ExpandContractSpec) -> ExpandContractSpec:
    """``spec`` changing a column the table does not have (refused by ``check_change``)."""
    ops = [spec.operations[0].model_dump() | {"column": "amt"}, spec.operations[1].model_dump()]
    return make_spec(spec.database.url, name=spec.name, operations=ops)


def trail(store: ControlStore, name: str) -> tuple[Any, ...]:
    """Everything the control store holds of ``name``: its phase, lease and epoch, and its audit log."""
    return read_lease(store.engine, name), store.audit_entries(name)


def test_a_change_refused_by_the_holder_of_its_table_leaves_no_migration(
    kind: str, database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = database_url(kind)
    create_orders(url, rows=50)
    store = store_beside(kind, database_url, tmp_path)
    control = str(store.engine.url.render_as_string(hide_password=False))
    first = make_spec(url)
    run_schema_change(str(spec_file(tmp_path, first, "first")), control, OPTIONS, stop_after="sync")
    held = trail(store, first.name)

    second = make_spec(url, name="orders-second", database=respelt(url, tmp_path), operations=SECOND)
    with pytest.raises(ConcurrentChangeError, match=r"'orders-cents' \(phase dual_writing\)"):
        run_schema_change(str(spec_file(tmp_path, second, "second")), control, OPTIONS, stop_after="sync")
    assert not store.has_migration(second.name)
    assert store.audit_entries(second.name) == []
    assert [m["name"] for m in store.migrations()] == [first.name]
    assert trail(store, first.name) == held  # the holder untouched


def test_a_change_refused_by_its_spec_leaves_no_migration(
    kind: str, database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = database_url(kind)
    create_orders(url, rows=50)
    store = store_beside(kind, database_url, tmp_path)
    control = store.engine.url.render_as_string(hide_password=False)
    with pytest.raises(SpecError) as caught:
        run_schema_change(str(spec_file(tmp_path, bad_column(make_spec(url)))), control, OPTIONS)
    assert caught.value.field == "operations.0.column"  # the refusal is what the user sees
    assert not store.has_migration("orders-cents")
    assert store.audit_entries("orders-cents") == []
    assert store.migrations() == []

    # and the same name, once the spec is right, starts afresh
    report = run_schema_change(str(spec_file(tmp_path, make_spec(url), "good")), control, OPTIONS, stop_after="expand")
    assert report["ran"] == ["expand"]
    assert store.audit_entries("orders-cents", action="phase")[0]["detail"]["reason"] == "registered"


def test_a_table_move_refused_by_its_first_stage_leaves_no_migration(  # type: ignore[no-untyped-def]
    kind: str, prefect_harness: None, database_url, tmp_path: Path
) -> None:
    """A schema change holds the move's old table: the dual-write stage refuses the move after its
    rehearsal (which records its findings) and before its claim; the move leaves nothing behind."""
    from test_one_change_per_table import table_move

    from shiftover.flows.dual_write import dual_write

    url, new_url = database_url(kind), database_url("sqlite")
    create_orders(url, rows=50)
    store = store_beside(kind, database_url, tmp_path)
    control = store.engine.url.render_as_string(hide_password=False)
    change = make_spec(url)
    run_schema_change(str(spec_file(tmp_path, change, "change")), control, OPTIONS, stop_after="sync")
    held = trail(store, change.name)

    move = table_move(respelt(url, tmp_path), new_url, tmp_path)
    with pytest.raises(ConcurrentChangeError, match=r"'orders-cents' \(phase dual_writing\)"):
        dual_write(move, control)
    assert not store.has_migration("orders-move")
    assert store.audit_entries("orders-move") == []
    assert trail(store, change.name) == held


def test_a_table_move_its_databases_refute_leaves_no_migration(  # type: ignore[no-untyped-def]
    kind: str, prefect_harness: None, database_url, tmp_path: Path
) -> None:
    """A key the old table does not have is refused when the run opens the move, under its lease."""
    from test_one_change_per_table import table_move

    from shiftover.flows.dual_write import dual_write

    url = database_url(kind)
    create_orders(url, rows=5)
    store = store_beside(kind, database_url, tmp_path)
    control = store.engine.url.render_as_string(hide_password=False)
    move = Path(table_move({"url": url, "table": "orders"}, database_url("sqlite"), tmp_path))
    move.write_text(move.read_text().replace("key: id", "key: nope"))
    with pytest.raises(SpecError, match="nope"):
        dual_write(str(move), control)
    assert not store.has_migration("orders-move")
    assert store.audit_entries("orders-move") == []


def test_a_refused_rerun_keeps_what_earlier_runs_recorded(
    kind: str, database_url: Callable[[str], str], tmp_path: Path
) -> None:
    """Two migrations earlier runs created: one still ``planned`` with only its registration (a run
    that stopped before its lease), one rolled back. Each re-run refused keeps its row and history."""
    url = database_url(kind)
    create_orders(url, rows=50)
    store = store_beside(kind, database_url, tmp_path)
    control = store.engine.url.render_as_string(hide_password=False)
    spec = bad_column(make_spec(url, name="orders-earlier"))
    store.register(spec.name, spec.model_dump(mode="json", by_alias=True))  # as an earlier run left it
    earlier = trail(store, spec.name)
    with pytest.raises(SpecError):
        run_schema_change(str(spec_file(tmp_path, spec, "earlier")), control, OPTIONS)
    assert trail(store, spec.name)[1] == earlier[1]
    assert store.phase(spec.name) is Phase.PLANNED

    first, second = make_spec(url), make_spec(url, name="orders-second", operations=SECOND)
    run_schema_change(str(spec_file(tmp_path, first, "first")), control, OPTIONS, stop_after="sync")
    rollback_schema_change(first, store, "test")
    run_schema_change(str(spec_file(tmp_path, second, "second")), control, OPTIONS, stop_after="sync")
    rolled_back = store.audit_entries(first.name)
    with pytest.raises(ConcurrentChangeError, match="orders-second"):
        run_schema_change(str(spec_file(tmp_path, first, "first")), control, OPTIONS, restart=True)
    assert store.phase(first.name) is Phase.ROLLED_BACK
    assert store.audit_entries(first.name) == rolled_back


def test_a_second_first_run_of_one_name_never_removes_the_first(
    kind: str, database_url: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first runs of one change at once: the second, refused while the first holds the lease,
    removes nothing; the first goes on (its spec checks held until the second was refused)."""
    url = database_url(kind)
    create_orders(url, rows=50)
    store = store_beside(kind, database_url, tmp_path)
    control = store.engine.url.render_as_string(hide_password=False)
    path = str(spec_file(tmp_path, make_spec(url)))
    leased, refused = threading.Event(), threading.Event()
    real_check = expand_flow.check_change

    def check_after_the_second(spec: ExpandContractSpec) -> Any:
        leased.set()
        assert refused.wait(60)
        return real_check(spec)

    monkeypatch.setattr(expand_flow, "check_change", check_after_the_second)
    outcome: dict[str, Any] = {}

    def run_first() -> None:
        outcome["run"] = run_schema_change(path, control, OPTIONS, stop_after="expand")

    first = threading.Thread(target=run_first)
    first.start()
    try:
        assert leased.wait(60)
        with pytest.raises(LeaseHeldError):
            run_schema_change(path, control, OPTIONS, stop_after="expand")
        assert store.has_migration("orders-cents")
    finally:
        refused.set()
        first.join(60)
    assert outcome["run"]["ran"] == ["expand"]
    assert len(store.audit_entries("orders-cents", action=CLAIM)) == 1


def test_a_refused_run_whose_lease_was_taken_over_removes_nothing(
    kind: str, database_url: Callable[[str], str], tmp_path: Path
) -> None:
    """``forget_refused`` itself: not under a lease another run took since, nor once the migration
    claimed a table (a change the store keeps)."""
    store = store_beside(kind, database_url, tmp_path)
    assert store.enroll("m", {}).created and not store.enroll("m", {}).created
    lease = acquire_lease(store.engine, "m", "run-a")
    lease.release()  # as if it had expired
    other = acquire_lease(store.engine, "m", "run-b")
    assert not store.forget_refused("m", lease)
    assert store.has_migration("m")
    store.audit("m", "run-b", CLAIM, {"identities": []}, lease=other)
    assert not store.forget_refused("m", other)
    assert store.has_migration("m")
    assert store.enroll("n", {}).created
    assert store.forget_refused("n", acquire_lease(store.engine, "n", "run-c"))
    assert not store.has_migration("n") and store.audit_entries("n") == []


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    """The server of the table and of the control store."""
    return str(request.param)
