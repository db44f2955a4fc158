"""An application's writes during an expand/contract change (``ColumnWrites``), on the real servers,
with the sync triggers and without them (``sync: application``): inserts and updates in the old
shape and in the new leave every row with new == up(old), checked by plain SQL reads against values
computed here in Python; a wrong shape or a side missing from the table writes nothing; in the
triggerless mode the validate stage's check passes after writes through ``ColumnWrites`` and fails
after a raw write that bypassed it (the column backfill puts that row back in step); a value rounded
by its column is read by ``up`` as stored; a triggerless change runs, rolls back and contracts through
the evaluator."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import ENGINES, create_orders, make_spec, spec_file
from test_schema_split_merge import base_spec, create_people, join, merge_operation, split, split_operation

from shiftover.backfill.checkpoints import clear_plan
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flags.client import FlagClient
from shiftover.flags.store import set_flag
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.schema.backfill import backfill_columns, checkpoint_name
from shiftover.schema.columns import (
    Target,
    drop_old_columns,
    expand,
    install_sync,
    planned_ddl,
    rollback_expansion,
    stop_sync,
)
from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import MissingSideError, WriteShapeError
from shiftover.schema.plan import explain_schema_change
from shiftover.schema.spec import ExpandContractSpec
from shiftover.schema.validate import validate_columns
from shiftover.schema.writes import ColumnWrites

ROWS = 300
SYNCS = ["triggers", "application"]
CENTS = {
    "op": "change_column",
    "column": "amount",
    "to": "amount_cents",
    "type": "bigint",
    # round(): SQLite keeps numeric(12,2) as REAL, where 12.34 * 100 is 1233.9999999999998
    "up": "round(amount * 100)",
    "down": "amount_cents / 100.0",
}


def cents(amount: object) -> int | None:
    """up(old) computed here: the amount in cents, exactly."""
    return None if amount is None else int((Decimal(str(amount)) * 100).to_integral_value())


def amount_of_cents(value: object) -> Decimal | None:
    """down(new) computed here."""
    return None if value is None else Decimal(int(str(value))) / 100


def same_amount(stored: object, expected: Decimal | None) -> bool:
    return (stored is None and expected is None) or (
        stored is not None and expected is not None and Decimal(str(stored)) == expected
    )


def triggers_on(target: Target) -> list[str]:
    with target.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(sa.text(schema_dialect(conn).trigger_names_sql), {"t": target.table})]


def flip(client: FlagClient, store: ControlStore, spec: ExpandContractSpec, value: object) -> None:
    set_flag(store.engine, f"{spec.name}:schema.writes", value, "test")
    assert client.refresh()


@dataclass
class Case:
    """A table during sync (expanded, synced by ``sync``, backfilled) and its spec."""

    kind: str
    sync: str
    target: Target
    spec: ExpandContractSpec

    @property
    def engine(self) -> sa.Engine:
        return self.target.engine

    def rows(self, columns: str, table: str) -> dict[int, tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(f"SELECT id, {columns} FROM {table} ORDER BY id"))}


def synced(target: Target, spec: ExpandContractSpec, store: ControlStore) -> None:
    expand(target, spec)
    install_sync(target, spec)
    assert backfill_columns(target, spec, store.engine).complete


def orders_case(kind: str, sync: str, url: str, store: ControlStore, *, rows: int = ROWS) -> Case:
    spec = make_spec(url, operations=[CENTS], sync=sync)
    target = Target.of(create_orders(url, rows), spec)
    synced(target, spec, store)
    return Case(kind, sync, target, spec)


def people_case(kind: str, sync: str, url: str, store: ControlStore, op: str = "split") -> Case:
    operation = split_operation(kind) if op == "split" else merge_operation(kind)
    spec = base_spec(url, operation, f"people-{op}").model_copy(update={"sync": sync})
    olds = ("full_name",) if op == "split" else ("first_name", "last_name")
    target = Target.of(create_people(url, olds), spec)
    synced(target, spec, store)
    return Case(kind, sync, target, spec)


@pytest.fixture(params=[(kind, sync) for kind in ENGINES for sync in SYNCS], ids=lambda p: f"{p[0]}-{p[1]}")
def engine_sync(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> tuple[str, str, str]:
    kind, sync = request.param
    return kind, sync, database_url(kind)


def test_the_triggerless_mode_installs_no_triggers(engine_sync: tuple[str, str, str], control_store) -> None:  # type: ignore[no-untyped-def]
    kind, sync, url = engine_sync
    case = orders_case(kind, sync, url, control_store, rows=10)
    assert (triggers_on(case.target) == []) == (sync == "application")


def test_change_column_writes_in_both_shapes_keep_every_row_in_step(
    engine_sync: tuple[str, str, str],
    control_store,  # type: ignore[no-untyped-def]
) -> None:
    kind, sync, url = engine_sync
    case = orders_case(kind, sync, url, control_store)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, case.spec, case.engine, columns=["note"])
    assert not writes.writes_new()

    # old shape: the application passes amount; amount_cents is computed in the same statement
    written_old = {10_001: Decimal("12.34"), 10_002: None, 10_003: Decimal("0.05")}
    for key, amount in written_old.items():
        writes.insert({"id": key, "amount": amount, "note": "old-shape"})
    updated_old = {3: Decimal("99.99"), 4: None, 5: Decimal("1234567.89")}
    for key, amount in updated_old.items():
        assert writes.update(key, {"amount": amount}) == 1
    assert writes.update(6, {"note": "note only"}) == 1  # no moved column: nothing computed
    assert writes.update(999_999, {"amount": Decimal("1.00")}) == 0
    assert writes.delete(8) == 1

    # new shape: the application passes amount_cents; amount is computed
    flip(client, control_store, case.spec, {"columns": "new"})
    assert writes.writes_new()
    written_new = {10_004: 4321, 10_005: None, 10_006: 7}
    for key, value in written_new.items():
        writes.insert({"id": key, "amount_cents": value})
    updated_new = {9: 100, 10: None, 11: 123_456_789}
    for key, value in updated_new.items():
        assert writes.update(key, {"amount_cents": value}) == 1
    assert writes.delete((12,)) == 1

    rows = case.rows("amount, amount_cents, note", "orders")
    assert 8 not in rows and 12 not in rows
    assert len(rows) == ROWS - 2 + len(written_old) + len(written_new)
    out_of_step = {k: (a, c) for k, (a, c, _) in rows.items() if c != cents(a)}
    assert out_of_step == {}  # every row: amount_cents == up(amount), computed here
    for key, amount in {**written_old, **updated_old}.items():
        assert same_amount(rows[key][0], amount), key
        assert rows[key][1] == cents(amount), key
    for key, value in {**written_new, **updated_new}.items():
        assert rows[key][1] == value, key
        assert same_amount(rows[key][0], amount_of_cents(value)), key
    assert rows[6][2] == "note only"
    assert validate_columns(case.target, case.spec).passed


@pytest.mark.parametrize("sync", SYNCS)
@pytest.mark.parametrize("kind", ENGINES)
def test_split_writes_in_both_shapes_keep_every_row_in_step(
    kind: str, sync: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    case = people_case(kind, sync, database_url(kind), control_store)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, case.spec, case.engine)
    writes.insert({"id": 5_001, "full_name": "Ada Lovelace"})
    writes.insert({"id": 5_002, "full_name": None})
    assert writes.update(3, {"full_name": "Grace Hopper"}) == 1
    flip(client, control_store, case.spec, {"columns": "new"})
    writes.insert({"id": 5_003, "first_name": "Alan", "last_name": "Turing"})
    assert writes.update(4, {"first_name": "Edsger", "last_name": "Dijkstra"}) == 1
    assert writes.update(5, {"last_name": "Knuth"}) == 1  # down reads first_name from the stored row

    rows = case.rows("full_name, first_name, last_name", "people")
    assert {k: r for k, r in rows.items() if split(r[0]) != (r[1], r[2])} == {}  # new == up(old), in Python
    assert rows[5_001] == ("Ada Lovelace", "Ada", "Lovelace")
    assert rows[5_002] == (None, None, None)
    assert rows[3] == ("Grace Hopper", "Grace", "Hopper")
    assert rows[5_003] == (join("Alan", "Turing"), "Alan", "Turing")
    assert rows[4] == ("Edsger Dijkstra", "Edsger", "Dijkstra")
    assert rows[5] == ("F5 Knuth", "F5", "Knuth")  # row 5 was "F5 L185"
    assert validate_columns(case.target, case.spec).passed


@pytest.mark.parametrize("kind", ENGINES)
def test_an_update_computes_up_over_the_passed_values_and_the_stored_row(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """A merge's up reads both old columns; an update passing one takes the other from the row."""
    case = people_case(kind, "application", database_url(kind), control_store, op="merge")
    writes = ColumnWrites(FlagClient(control_store.engine, start=False), case.spec, case.engine)
    before = case.rows("first_name, last_name", "people")[6]
    assert writes.update(6, {"first_name": "Zed"}) == 1
    assert case.rows("first_name, last_name, full_name", "people")[6] == ("Zed", before[1], f"Zed {before[1]}")
    assert validate_columns(case.target, case.spec).passed


@pytest.mark.parametrize("kind", ENGINES)
def test_a_wrong_shape_is_refused_naming_the_columns_and_writes_nothing(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    case = orders_case(kind, "application", database_url(kind), control_store, rows=20)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, case.spec, case.engine, columns=["note"])
    before = case.rows("amount, amount_cents, note", "orders")

    refused: list[tuple[Callable[[], object], list[str], list[str]]] = [
        (lambda: writes.insert({"id": 100, "amount_cents": 5, "note": "x"}), ["amount_cents"], []),
        (lambda: writes.insert({"id": 100, "note": "x"}), [], ["amount"]),
        (lambda: writes.insert({"amount": Decimal("1.00")}), [], ["id"]),
        (lambda: writes.insert({"id": 100, "amount": 1, "bogus": 1}), ["bogus"], []),
        (lambda: writes.update(3, {"amount": 1, "amount_cents": 100}), ["amount_cents"], []),
        (lambda: writes.update(3, {"id": 4, "amount": 1}), ["id"], []),
    ]
    for write, unexpected, missing in refused:
        with pytest.raises(WriteShapeError) as error:
            write()
        assert (list(error.value.unexpected), list(error.value.missing)) == (unexpected, missing)
        assert not error.value.writes_new
        for name in unexpected + missing:
            assert repr(name) in str(error.value)

    flip(client, control_store, case.spec, {"columns": "new"})
    with pytest.raises(WriteShapeError, match=r"new columns.*unexpected column\(s\) \['amount'\]"):
        writes.update(3, {"amount": Decimal("1.00")})
    with pytest.raises(WriteShapeError, match=r"missing column\(s\) \['amount_cents'\]"):
        writes.insert({"id": 100, "note": "x"})
    assert case.rows("amount, amount_cents, note", "orders") == before


@pytest.mark.parametrize("kind", ENGINES)
def test_a_side_missing_from_the_table_fails_the_write_whole(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    url = database_url(kind)
    spec = make_spec(url, operations=[CENTS], sync="application")
    target = Target.of(create_orders(url, 20), spec)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, spec, target.engine)

    def ids() -> set[int]:
        with target.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text("SELECT id FROM orders"))}

    with pytest.raises(MissingSideError, match=r"nothing written.*no column\(s\) \['amount_cents'\]"):
        writes.insert({"id": 100, "amount": Decimal("1.00")})  # before expand
    assert 100 not in ids()

    synced(target, spec, control_store)
    writes.insert({"id": 100, "amount": Decimal("1.00")})  # the types are read again: amount_cents is there
    flip(client, control_store, spec, {"columns": "new"})
    writes.insert({"id": 101, "amount_cents": 250})
    stop_sync(target, spec)  # no triggers to drop
    drop_old_columns(target, spec)
    with pytest.raises(MissingSideError, match=r"no column\(s\) \['amount'\]"):
        writes.insert({"id": 102, "amount_cents": 300})  # amount's type was known: the statement fails whole
    with pytest.raises(MissingSideError, match=r"no column\(s\) \['amount'\]"):
        writes.update(100, {"amount_cents": 300})
    assert ids() == set(range(1, 21)) | {100, 101}
    with target.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 100")).scalar() == 100


@pytest.mark.parametrize("kind", ENGINES)
def test_triggerless_validate_passes_after_column_writes_and_catches_a_raw_write(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    case = orders_case(kind, "application", database_url(kind), control_store)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, case.spec, case.engine)
    for key in range(1, 40):
        writes.update(key, {"amount": Decimal(key) / 4})
    writes.insert({"id": 20_000, "amount": Decimal("3.21")})
    assert validate_columns(case.target, case.spec).passed

    with case.engine.begin() as conn:  # a writer that does not go through ColumnWrites: no trigger catches it
        conn.execute(sa.text("UPDATE orders SET amount = 77.77 WHERE id = 21"))
    report = validate_columns(case.target, case.spec)
    assert not report.passed
    assert [(c.mismatches, c.keys) for c in report.checks if c.mismatches] == [(1, ((21,),))]

    clear_plan(control_store.engine, checkpoint_name(case.spec))  # the column backfill run again
    assert backfill_columns(case.target, case.spec, control_store.engine).rows_updated == 1
    assert case.rows("amount_cents", "orders")[21] == (7777,)
    assert validate_columns(case.target, case.spec).passed


@pytest.mark.parametrize("kind", ENGINES)
def test_concurrent_writers_through_one_column_writes_while_the_flag_flips(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """Four threads share one ``ColumnWrites``; each takes the shape from ``writes_new()`` and writes
    again when the flag flipped in between (refused whole). Every row ends in step."""
    case = orders_case(kind, "application", database_url(kind), control_store, rows=50)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, case.spec, case.engine)
    errors: list[BaseException] = []
    halfway, flipped = threading.Barrier(5, timeout=60), threading.Event()

    def writer(start: int) -> None:
        try:
            for i in range(start, start + 40):
                if i == start + 20:
                    halfway.wait()  # 20 old-shape rows each; the flag flips while the next 15 are written
                if i == start + 35:
                    flipped.wait(60)  # the last 5 after the flip: new shape
                while True:
                    values = {"amount_cents": i * 3} if writes.writes_new() else {"amount": Decimal(i) / 4}
                    try:
                        writes.insert({"id": i, **values})
                        break
                    except WriteShapeError:  # the flag flipped between writes_new() and insert()
                        continue
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(1_000 * n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    halfway.wait()
    flip(client, control_store, case.spec, {"columns": "new"})
    flipped.set()
    for t in threads:
        t.join()
    assert errors == []
    rows = case.rows("amount, amount_cents", "orders")
    assert len(rows) == 50 + 160
    assert {k: r for k, r in rows.items() if r[1] != cents(r[0])} == {}
    for n in range(1, 5):
        assert all(same_amount(rows[1_000 * n + i][0], Decimal(1_000 * n + i) / 4) for i in range(20))
        assert all(rows[1_000 * n + i][1] == (1_000 * n + i) * 3 for i in range(35, 40))
    assert validate_columns(case.target, case.spec).passed


def test_sync_application_refuses_version_schema_and_defaults_to_triggers(sqlite_database) -> None:  # type: ignore[no-untyped-def]
    url = sqlite_database()
    assert make_spec(url).sync == "triggers"
    with pytest.raises(SpecError, match="version_schema does not go with sync: application"):
        make_spec(url, sync="application", version_schema="orders_v2")
    with pytest.raises(SpecError, match="sync"):
        make_spec(url, sync="nothing")


@pytest.mark.parametrize("kind", ENGINES)
def test_plan_says_triggerless_and_stop_sync_and_rollback_run_without_triggers(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    url = database_url(kind)
    spec = make_spec(url, operations=[CENTS], sync="application")
    target = Target.of(create_orders(url, 20), spec)
    ddl = planned_ddl(target, spec)
    assert len(ddl["sync"]) == 1 and ddl["sync"][0].startswith("-- sync: application: no triggers")
    assert "only writes through ColumnWrites" in ddl["sync"][0]
    with_triggers = planned_ddl(target, make_spec(url, operations=[CENTS]))
    assert any("CREATE" in s and "TRIGGER" in s for s in with_triggers["sync"])
    explained = explain_schema_change(spec)
    assert "no triggers: only writes through ColumnWrites keep old and new in step" in explained
    assert "put in step by the validate stage first (and counted)" in explained

    synced(target, spec, control_store)
    assert triggers_on(target) == []
    rollback_expansion(target, spec)
    assert "amount_cents" not in target.column_names()
    synced(target, spec, control_store)
    stop_sync(target, spec)
    drop_old_columns(target, spec)
    assert "amount" not in target.column_names() and "amount_cents" in target.column_names()


@pytest.mark.parametrize("kind", ENGINES)
def test_a_triggerless_change_runs_rolls_back_and_contracts_through_the_evaluator(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """``sync: application`` through the plan's evaluator: no trigger at any stage, the application's
    writes through ``ColumnWrites`` in the shape the run's writes flag names, a rollback before
    contract and a restart to the end."""
    url = database_url(kind)
    spec = make_spec(url, operations=[CENTS], sync="application")
    target = Target.of(create_orders(url, 200), spec)
    path, control = str(spec_file(tmp_path, spec, "change")), str(control_store.engine.url)
    options = RunOptions(auto_approve=True)
    client = FlagClient(control_store.engine, start=False)
    writes = ColumnWrites(client, spec, target.engine)

    assert run_schema_change(path, control, options, stop_after="sync")["ran"] == ["expand", "sync"]
    assert triggers_on(target) == []
    writes.insert({"id": 5_000, "amount": Decimal("2.50")})
    assert run_schema_change(path, control, options, stop_after="validate")["ran"] == ["backfill", "validate"]
    rollback_schema_change(spec, control_store, "test")
    assert target.column_names() == ["id", "amount", "note"] and triggers_on(target) == []

    report = run_schema_change(path, control, options, restart=True, stop_after="switch_writes")
    assert report["ran"][-1] == "switch_writes"
    assert client.refresh() and writes.writes_new()  # the run flipped the writes flag
    writes.insert({"id": 5_001, "amount_cents": 999})
    assert writes.update(5_000, {"amount_cents": 251}) == 1
    rows = Case(kind, "application", target, spec).rows("amount, amount_cents", "orders")
    assert {k: r for k, r in rows.items() if r[1] != cents(r[0])} == {}
    assert same_amount(rows[5_001][0], Decimal("9.99")) and same_amount(rows[5_000][0], Decimal("2.51"))

    assert run_schema_change(path, control, options)["ran"] == ["stop_sync", "drop_old_columns"]
    assert target.column_names() == ["id", "note", "amount_cents"]
    with pytest.raises(MissingSideError):
        writes.insert({"id": 5_002, "amount_cents": 1})


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_triggerless_validate_stage_first_puts_rows_written_around_column_writes_in_step(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    """Rows a writer changed outside ColumnWrites after the backfill: no trigger caught them, so the
    validate stage's own backfill pass does, and its report and audit entry count them."""
    url = database_url(kind)
    spec = make_spec(url, operations=[CENTS], sync="application")
    engine = create_orders(url, 200)
    path, control = str(spec_file(tmp_path, spec, "change")), str(control_store.engine.url)
    options = RunOptions(auto_approve=True)
    run_schema_change(path, control, options, stop_after="backfill")
    with engine.begin() as conn:  # a batch job that does not know about the change
        conn.execute(sa.text("UPDATE orders SET amount = 77.77 WHERE id IN (21, 22, 23)"))

    report = run_schema_change(path, control, options, stop_after="validate")
    assert report["ran"] == ["validate"]
    assert report["stages"]["validate"]["caught_up_rows"] == 3
    [audit] = control_store.audit_entries(spec.name, action="schema_validation")
    assert audit["detail"]["caught_up_rows"] == 3
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount_cents FROM orders WHERE id IN (21, 22, 23) ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(21, 7777), (22, 7777), (23, 7777)]


@pytest.mark.parametrize("kind", ENGINES)
def test_the_expressions_read_a_value_as_its_column_stores_it(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """12.345 is stored as 12.35 in a numeric(12,2) (SQLite keeps it): up must read what is stored,
    or ``amount * 1000`` gives 12345 beside an amount of 12.35. A string too long for its column is
    refused whole where the engine refuses it, never cut to fit."""
    url = database_url(kind)
    mills = CENTS | {"to": "amount_mills", "up": "amount * 1000", "down": "amount_mills / 1000.0"}
    spec = make_spec(url, operations=[mills], sync="application")
    target = Target.of(create_orders(url, 20), spec)
    synced(target, spec, control_store)
    writes = ColumnWrites(FlagClient(control_store.engine, start=False), spec, target.engine, columns=["note"])
    writes.insert({"id": 100, "amount": Decimal("12.345"), "note": "x"})
    assert writes.update(3, {"amount": Decimal("0.125")}) == 1
    with target.engine.connect() as conn:
        stored = {r[0]: (r[1], r[2]) for r in conn.execute(sa.text("SELECT id, amount, amount_mills FROM orders"))}
    expected_amount = {100: Decimal("12.345"), 3: Decimal("0.125")}
    if kind != "sqlite":
        expected_amount = {100: Decimal("12.35"), 3: Decimal("0.13")}
    for key, amount in expected_amount.items():
        assert same_amount(stored[key][0], amount), key
        assert Decimal(str(stored[key][1])) == amount * 1000, key
    assert validate_columns(target, spec).passed

    too_long = "x" * 41  # note is varchar(40)
    if kind == "sqlite":  # SQLite keeps any length
        writes.insert({"id": 101, "amount": Decimal("1.00"), "note": too_long})
    else:
        with pytest.raises(sa.exc.DBAPIError):
            writes.insert({"id": 101, "amount": Decimal("1.00"), "note": too_long})
        with pytest.raises(sa.exc.DBAPIError):
            writes.update(4, {"amount": Decimal("1.00"), "note": too_long})
    with target.engine.connect() as conn:
        notes = dict(conn.execute(sa.text("SELECT id, note FROM orders WHERE id IN (4, 101)")).all())
    assert notes == ({4: "n4", 101: too_long} if kind == "sqlite" else {4: "n4"})


@pytest.mark.parametrize("kind", ENGINES)
def test_a_composite_key_is_passed_as_a_tuple(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    url = database_url(kind)
    engine = get_engine(url)
    meta = sa.MetaData()
    sa.Table(
        "orders",
        meta,
        sa.Column("region", sa.String(8), primary_key=True),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(12, 2)),
    )
    meta.create_all(engine)
    spec = make_spec(url, operations=[CENTS], key=["region", "id"], sync="application")
    target = Target.of(engine, spec)
    synced(target, spec, control_store)
    writes = ColumnWrites(FlagClient(control_store.engine, start=False), spec, engine)
    for region in ("eu", "us"):
        writes.insert({"region": region, "id": 1, "amount": Decimal("1.00")})
    assert writes.update(("us", 1), {"amount": Decimal("2.50")}) == 1
    assert writes.update(["eu", 2], {"amount": Decimal("9.00")}) == 0
    with pytest.raises(WriteShapeError, match=r"missing column\(s\) \['region'\]"):
        writes.insert({"id": 2, "amount": Decimal("1.00")})
    with engine.connect() as conn:
        rows = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(sa.text("SELECT * FROM orders"))}
    assert {k: (Decimal(str(a)), c) for k, (a, c) in rows.items()} == {
        ("eu", 1): (Decimal("1.00"), 100),
        ("us", 1): (Decimal("2.50"), 250),
    }
    assert writes.delete(("eu", 1)) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 1


@pytest.mark.filterwarnings("ignore:Did not recognize type 'point'")  # expand's and the backfill's reflections
def test_a_column_of_a_type_sqlalchemy_does_not_know_is_written_as_passed(
    database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """PostgreSQL's ``point`` reflects as NullType, which has no SQL to cast to: its value goes bare."""
    url = database_url("postgres")
    spec = make_spec(url, operations=[CENTS], sync="application")
    target = Target.of(create_orders(url, 5), spec)
    with target.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders ADD COLUMN spot point"))
    synced(target, spec, control_store)
    writes = ColumnWrites(FlagClient(control_store.engine, start=False), spec, target.engine, columns=["spot"])
    with pytest.warns(sa.exc.SAWarning, match="point"):
        writes.insert({"id": 100, "amount": Decimal("1.25"), "spot": "(1,2)"})
    with target.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT amount_cents, spot::text FROM orders WHERE id = 100")).one()
    assert tuple(row) == (125, "(1,2)")
