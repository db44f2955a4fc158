"""Between contract's two steps: once ``stop_sync`` swapped the two-way triggers for forward-only
ones, a write through the new columns no longer fills the old columns, yet they stay until
``drop_old_columns``. The new version of the application inserts
through the new columns alone all that time, so an old column that is NOT NULL with no default
must accept NULL by then (it did not: PostgreSQL refused the insert with a NotNullViolation,
MariaDB with 1364 "Field 'amount' doesn't have a default value"). And a rollback that finds
``stop_sync`` begun but not recorded (a run killed inside it) must refuse, not drop the new columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import amount_of, make_spec, spec_file

import shiftover.flows.expand as expand_flow
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target, planned_ddl, remove_sync
from shiftover.schema.errors import ContractRefusedError
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ExpandContractSpec

ROWS = 300


def create_strict_orders(url: str) -> sa.Engine:
    """``amount`` and ``note`` NOT NULL with no default, ``region`` NOT NULL with one."""
    engine = get_engine(url)
    meta = sa.MetaData()
    orders = sa.Table(
        "orders",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("note", sa.String(40), nullable=False),
        sa.Column("region", sa.String(8), nullable=False, server_default="eu"),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": i, "amount": amount_of(i), "note": f"n{i}"} for i in range(1, ROWS + 1)])
    return engine


def strict_spec(url: str) -> ExpandContractSpec:
    spec = make_spec(url)
    operations = [op.model_dump(mode="json", by_alias=True) for op in spec.operations]
    return make_spec(
        url,
        operations=[*operations, {"op": "drop_column", "column": "note"}, {"op": "drop_column", "column": "region"}],
    )


def nullable(engine: sa.Engine) -> dict[str, bool]:
    return {c["name"]: bool(c["nullable"]) for c in sa.inspect(engine).get_columns("orders")}


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_the_new_version_inserts_through_the_new_columns_alone_until_the_old_ones_are_dropped(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_strict_orders(url)
    spec = strict_spec(url)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    planned = planned_ddl(Target.of(engine, spec), spec)["stop_sync"]
    altered = [s for s in planned if s.startswith("ALTER")]  # the forward trigger's body names every column
    assert sum("amount" in s and "NULL" in s for s in altered) == 1, planned
    assert sum("note" in s for s in altered) == 1 and not any("region" in s for s in altered), planned

    report = run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="stop_sync")
    assert report["ran"][-1] == "stop_sync", report
    assert nullable(engine) | {"amount_cents": False, "channel": False} == {
        "id": False, "amount": True, "note": True, "region": False, "amount_cents": False, "channel": False,
    }  # fmt: skip
    # what the new version writes: the new columns only (region keeps its default)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO orders (id, amount_cents, channel) VALUES (:i, 12345, 'app')"), {"i": ROWS + 1}
        )
        conn.execute(sa.text("UPDATE orders SET amount_cents = 777 WHERE id = 2"))
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT amount, note, region, amount_cents FROM orders WHERE id = :i"), {"i": ROWS + 1}
        )
        assert tuple(row.one()) == (None, None, "eu", 12345)
        # only forward triggers are left (old -> new): the old column keeps its last synced value
        assert tuple(conn.execute(sa.text("SELECT amount, amount_cents FROM orders WHERE id = 2")).one()) == (
            amount_of(2),
            777,
        )

    report = run_schema_change(path, control, RunOptions(auto_approve=True))
    assert report["ran"] == ["drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, amount_cents FROM orders")).all())  # type: ignore[arg-type]
    assert rows == {i: int(amount_of(i) * 100) for i in range(1, ROWS + 1)} | {2: 777, ROWS + 1: 12345}


def test_a_rollback_finding_stop_sync_begun_refuses_and_changes_nothing(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_database()
    engine = create_strict_orders(url)
    spec = make_spec(url)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="switch_writes")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed inside stop_sync, its DDL maybe half done")

    monkeypatch.setattr(expand_flow, "stop_sync", killed)
    with pytest.raises(KeyboardInterrupt):
        run_schema_change(path, control, RunOptions(auto_approve=True))
    state = read_state(control_store, spec.name)
    assert state.phase is Phase.WRITES_SWITCHED and "stop_sync" not in state.completed
    assert state.started == {"stop_sync"}
    expanded = snapshot_table(engine, "orders", ("id",))
    with pytest.raises(ContractRefusedError, match="stop_sync"):
        rollback_schema_change(spec, control_store, "test")
    assert snapshot_table(engine, "orders", ("id",)) == expanded
    assert read_state(control_store, spec.name).phase is Phase.WRITES_SWITCHED

    remove_sync(Target.of(engine, spec), spec)  # say the killed DDL had dropped the triggers
    with engine.begin() as conn:  # and a write reached the old column alone meanwhile
        conn.execute(sa.text("UPDATE orders SET amount = 1.23 WHERE id = 3"))

    monkeypatch.undo()  # the run resumes: stop_sync again (idempotent; proved before it began), then drop
    report = run_schema_change(path, control, RunOptions(auto_approve=True))
    assert report["ran"] == ["stop_sync", "drop_old_columns"] and report["phase"] == Phase.DECOMMISSIONED
    [done] = [
        e["detail"]
        for e in control_store.audit_entries(spec.name, action="stage")
        if e["detail"]["stage"] == "stop_sync"
    ]
    assert done["reason"].startswith("begun by an earlier run")


def test_the_plan_says_what_sqlite_leaves_not_null(sqlite_database: Callable[[], str]) -> None:
    url = sqlite_database()
    engine = create_strict_orders(url)
    spec = strict_spec(url)
    planned = planned_ddl(Target.of(engine, spec), spec)["stop_sync"]
    notes = [s for s in planned if s.startswith("--") and "stays NOT NULL" in s]
    assert [n.split()[1] for n in notes] == ["amount", "note"], planned
    assert [s for s in planned if s.startswith("--") and s not in notes] == [
        "-- the two-way triggers make way for forward-only ones (_fwd): until drop_old_columns a write to an old "
        "column (an instance still on the old version) still sets new = up(old); a write through the new columns "
        "no longer touches the old ones"
    ]
    assert all("from expand until drop_old_columns an insert that does not name it fails" in n for n in notes)


def test_on_sqlite_the_new_version_inserts_through_column_writes(  # type: ignore[no-untyped-def]
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """SQLite's triggers run after its NOT NULL check: an insert naming only amount_cents fails on the
    NOT NULL amount while writes are switched; the same row through ColumnWrites (new shape) names
    amount too, computed by down(new), and is written."""
    from shiftover.flags.client import FlagClient
    from shiftover.schema.writes import ColumnWrites

    url = sqlite_database()
    engine = create_strict_orders(url)
    spec = make_spec(url)  # amount -> amount_cents, and channel added
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="switch_writes")
    with pytest.raises(sa.exc.IntegrityError, match=r"NOT NULL constraint failed: orders\.amount"):
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO orders (id, note, amount_cents) VALUES (9001, 'raw', 1234)"))

    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, spec, engine, columns=["note"])
    assert writes.writes_new()
    writes.insert({"id": 9001, "note": "through shiftover", "amount_cents": 1234})
    with engine.connect() as conn:
        amount, cents = conn.execute(sa.text("SELECT amount, amount_cents FROM orders WHERE id = 9001")).one()
    assert (float(amount), cents) == (12.34, 1234)
