"""split_column and merge_columns on the real servers: the new columns end with the right values
(read back by plain SQL, computed independently in Python), writes through the old and through the
new columns keep the other side equal while both live (also under concurrent writers during the
backfill), a rollback from each stage before contract restores the table exactly, a lossy ``down``
is caught by the reversibility check, and the plan runs to the end through the evaluator."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import spec_file as write_spec_file

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import (
    Target,
    drop_old_columns,
    expand,
    install_sync,
    remove_sync,
    rollback_expansion,
    stop_sync,
)
from shiftover.schema.engines import schema_dialect
from shiftover.schema.errors import ColumnMismatchError
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ColumnBackfillSpec, ExpandContractSpec, parse_expand_contract
from shiftover.schema.validate import rows_out_of_step, validate_columns

ROWS = 1_200
ENGINES = ["postgres", "mariadb", "sqlite"]

# Each engine's own SQL for "the part before the first space", "the part after it" and "a space b".
FIRST = {
    "postgres": "split_part({c}, ' ', 1)",
    "mariadb": "substring_index({c}, ' ', 1)",
    "sqlite": "substr({c}, 1, instr({c}, ' ') - 1)",
}
LAST = {
    "postgres": "split_part({c}, ' ', 2)",
    "mariadb": "substring_index({c}, ' ', -1)",
    "sqlite": "substr({c}, instr({c}, ' ') + 1)",
}
JOIN = {
    "postgres": "{a} || ' ' || {b}",
    "mariadb": "concat({a}, ' ', {b})",
    "sqlite": "{a} || ' ' || {b}",
}


def full_name_of(i: int) -> str | None:
    return None if i == 7 else f"F{i} L{i * 37 % 1000}"  # row 7: NULL goes through too


def split(full: str | None) -> tuple[str | None, str | None]:
    """The expected new values, computed in Python (independent of the SQL under test)."""
    if full is None:
        return None, None
    first, last = full.split(" ", 1)
    return first, last


def join(first: str | None, last: str | None) -> str | None:
    return None if first is None or last is None else f"{first} {last}"


def base_spec(url: str, operation: dict[str, Any], name: str) -> ExpandContractSpec:
    return parse_expand_contract(
        {
            "kind": "expand_contract",
            "name": name,
            "database": {"url": url, "table": "people"},
            "key": ["id"],
            "operations": [operation],
            "lock": {"timeout_ms": 200, "attempts": 50, "backoff_ms": 20, "max_backoff_ms": 200},
            "backfill": {"chunk_rows": 250},
            "approvals": {"auto": True},
            "retention_hours": 0,
        }
    )


def split_operation(kind: str, **edit: Any) -> dict[str, Any]:
    return {
        "op": "split_column",
        "column": "full_name",
        "into": [
            {"name": "first_name", "type": "varchar(60)", "up": FIRST[kind].format(c="full_name")},
            {"name": "last_name", "type": "varchar(60)", "up": LAST[kind].format(c="full_name")},
        ],
        "down": JOIN[kind].format(a="first_name", b="last_name"),
        "reversible": True,
    } | edit


def merge_operation(kind: str, **edit: Any) -> dict[str, Any]:
    return {
        "op": "merge_columns",
        "columns": ["first_name", "last_name"],
        "to": "full_name",
        "type": "varchar(121)",
        "up": JOIN[kind].format(a="first_name", b="last_name"),
        "down": {"first_name": FIRST[kind].format(c="full_name"), "last_name": LAST[kind].format(c="full_name")},
        "reversible": True,
    } | edit


@dataclass
class Case:
    op: str  # split or merge
    kind: str
    target: Target
    spec: ExpandContractSpec

    @property
    def engine(self) -> sa.Engine:
        return self.target.engine


def create_people(url: str, columns: tuple[str, ...]) -> sa.Engine:
    """``people`` with the old columns: ``full_name`` (for a split) or ``first_name, last_name`` (for a merge)."""
    engine = get_engine(url)
    meta = sa.MetaData()
    people = sa.Table(
        "people",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(c, sa.String(121 if c == "full_name" else 60)) for c in columns),
        sa.Column("note", sa.String(40)),
    )
    meta.create_all(engine)
    rows = []
    for i in range(1, ROWS + 1):
        full = full_name_of(i)
        first, last = split(full)
        values = {"full_name": full} if columns == ("full_name",) else {"first_name": first, "last_name": last}
        rows.append({"id": i, "note": f"n{i}", **values})
    with engine.begin() as conn:
        conn.execute(people.insert(), rows)
    return engine


def make_case(op: str, kind: str, url: str) -> Case:
    if op == "split":
        engine = create_people(url, ("full_name",))
        spec = base_spec(url, split_operation(kind), "people-split")
    else:
        engine = create_people(url, ("first_name", "last_name"))
        spec = base_spec(url, merge_operation(kind), "people-merge")
    return Case(op, kind, Target.of(engine, spec), spec)


@pytest.fixture(params=ENGINES)
def split_case(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Case:
    return make_case("split", request.param, database_url(request.param))


@pytest.fixture(params=ENGINES)
def merge_case(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Case:
    return make_case("merge", request.param, database_url(request.param))


@pytest.fixture(params=[(op, kind) for op in ("split", "merge") for kind in ENGINES], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Case:
    op, kind = request.param
    return make_case(op, kind, database_url(kind))


def read(engine: sa.Engine, columns: str) -> dict[int, tuple[Any, ...]]:
    """Every row's ``columns`` by id, by a plain SQL read."""
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(f"SELECT id, {columns} FROM people ORDER BY id"))}


def out_of_step(engine: sa.Engine) -> list[tuple[int, Any, Any, Any]]:
    """Rows where (first_name, last_name) is not the Python split of full_name."""
    rows = read(engine, "full_name, first_name, last_name")
    return [(i, f, a, b) for i, (f, a, b) in rows.items() if split(f) != (a, b)]


def expand_sync_backfill(case: Case, store: ControlStore) -> None:
    expand(case.target, case.spec)
    install_sync(case.target, case.spec)
    assert backfill_columns(case.target, case.spec, store.engine).complete


# -- the values ---------------------------------------------------------------------------------
def test_split_fills_each_new_column_and_contract_keeps_them(split_case: Case, control_store: ControlStore) -> None:
    case = split_case
    originals = read(case.engine, "full_name")
    expand_sync_backfill(case, control_store)
    report = validate_columns(case.target, case.spec).require()
    assert [(c.what, c.mismatches) for c in report.checks] == [
        ("first_name = up(full_name)", 0),
        ("last_name = up(full_name)", 0),
        ("down(up(full_name)) = full_name", 0),
    ]
    assert out_of_step(case.engine) == []
    stop_sync(case.target, case.spec)
    with case.engine.begin() as conn:  # an instance still on the old version writes the old column
        conn.execute(sa.text("UPDATE people SET full_name = 'Ada Lovelace' WHERE id = 3"))
        conn.execute(sa.text("INSERT INTO people (id, full_name) VALUES (9001, 'Barbara Liskov')"))
        conn.execute(sa.text("UPDATE people SET first_name = 'Grace' WHERE id = 4"))  # the new side: old kept
    assert read(case.engine, "full_name")[4] == (full_name_of(4),)
    assert len(snapshot_table(case.engine, "people", ("id",)).triggers) == (1 if case.kind == "postgres" else 2)
    drop_old_columns(case.target, case.spec)
    assert case.target.column_names() == ["id", "note", "first_name", "last_name"]
    after = read(case.engine, "first_name, last_name")
    originals |= {3: ("Ada Lovelace",), 9001: ("Barbara Liskov",)}
    assert after == {i: split(full) for i, (full,) in originals.items()} | {4: ("Grace", split(full_name_of(4))[1])}
    assert after[7] == (None, None) and after[2] == ("F2", "L74") and after[3] == ("Ada", "Lovelace")
    assert snapshot_table(case.engine, "people", ("id",)).triggers == ()


def test_merge_fills_the_new_column_and_contract_keeps_it(merge_case: Case, control_store: ControlStore) -> None:
    case = merge_case
    originals = read(case.engine, "first_name, last_name")
    expand_sync_backfill(case, control_store)
    report = validate_columns(case.target, case.spec).require()
    assert [(c.what, c.mismatches) for c in report.checks] == [
        ("full_name = up(first_name, last_name)", 0),
        ("down(up(first_name, last_name)) = first_name", 0),
        ("down(up(first_name, last_name)) = last_name", 0),
    ]
    assert out_of_step(case.engine) == []
    stop_sync(case.target, case.spec)
    with case.engine.begin() as conn:  # an instance still on the old version writes the old columns
        conn.execute(sa.text("UPDATE people SET first_name = 'Grace' WHERE id = 4"))
        conn.execute(sa.text("INSERT INTO people (id, first_name, last_name) VALUES (9002, 'Donald', 'Knuth')"))
        conn.execute(sa.text("UPDATE people SET full_name = 'Alan Turing' WHERE id = 5"))  # the new side: old kept
    assert read(case.engine, "first_name, last_name")[5] == split(full_name_of(5))
    drop_old_columns(case.target, case.spec)
    assert case.target.column_names() == ["id", "note", "full_name"]
    after = read(case.engine, "full_name")
    originals |= {4: ("Grace", split(full_name_of(4))[1]), 9002: ("Donald", "Knuth")}
    assert after == {i: (join(first, last),) for i, (first, last) in originals.items()} | {5: ("Alan Turing",)}
    assert after[7] == (None,) and after[2] == ("F2 L74",) and after[4] == ("Grace L148",)
    assert snapshot_table(case.engine, "people", ("id",)).triggers == ()


# -- writes through either side while both live --------------------------------------------------
def test_writes_through_old_and_new_columns_keep_the_other_side(case: Case, control_store: ControlStore) -> None:
    expand_sync_backfill(case, control_store)
    # full_name is the old side of a split and the new side of a merge: every write below goes
    # through one side, and the other side must follow
    with case.engine.begin() as conn:
        run = conn.execute
        run(sa.text("UPDATE people SET full_name = 'Ada Lovelace' WHERE id = 3"))
        run(sa.text("UPDATE people SET first_name = 'Grace' WHERE id = 4"))
        run(sa.text("UPDATE people SET last_name = 'Hopper' WHERE id = 7"))  # from NULL: full stays NULL
        run(sa.text("UPDATE people SET first_name = 'Alan', last_name = 'Turing' WHERE id = 5"))
        run(sa.text("UPDATE people SET full_name = 'Edsger Dijkstra' WHERE id = 6"))
        run(sa.text("UPDATE people SET note = 'untouched' WHERE id = 8"))
        run(sa.text("INSERT INTO people (id, full_name) VALUES (9001, 'Barbara Liskov')"))
        run(sa.text("INSERT INTO people (id, first_name, last_name) VALUES (9002, 'Donald', 'Knuth')"))
        run(sa.text("INSERT INTO people (id, note) VALUES (9003, 'neither')"))
    rows = read(case.engine, "full_name, first_name, last_name")
    assert rows[3] == ("Ada Lovelace", "Ada", "Lovelace")
    assert rows[4] == ("Grace L148", "Grace", "L148")
    assert rows[5] == ("Alan Turing", "Alan", "Turing")
    assert rows[6] == ("Edsger Dijkstra", "Edsger", "Dijkstra")
    assert rows[8] == ("F8 L296", "F8", "L296")
    assert rows[9001] == ("Barbara Liskov", "Barbara", "Liskov")
    assert rows[9002] == ("Donald Knuth", "Donald", "Knuth")
    assert rows[9003] == (None, None, None)
    # row 7 was (NULL, NULL, NULL); a write of last_name alone gives down(NULL, 'Hopper') = NULL
    # for a split (the old side is then not up-able) and leaves first_name NULL for a merge
    assert rows[7][2] == "Hopper" and rows[7][1] is None
    assert [r for r in out_of_step(case.engine) if r[0] != 7] == []


class Writers:
    """Application writes through some columns (the old or the new side), on a thread: an update of
    a random row and an insert per transaction."""

    def __init__(self, engine: sa.Engine, columns: str, first_id: int) -> None:
        self.engine, self.columns, self.first_id = engine, columns, first_id
        self.stop = threading.Event()
        self.count = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Writers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def wait_for(self, writes: int) -> None:
        start, deadline = self.count, time.monotonic() + 30
        while self.count - start < writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count - start >= writes, f"writer failing: {self.errors[:3]}"

    def _run(self) -> None:
        rnd, next_id = random.Random(self.first_id), self.first_id
        while not self.stop.is_set():
            first, last = f"W{rnd.randint(0, 999)}", f"X{rnd.randint(0, 999)}"
            if self.columns == "full_name":
                values = {"full_name": f"{first} {last}"}
            else:
                values = {"first_name": first, "last_name": last}
            sets, cols = ", ".join(f"{c} = :{c}" for c in values), ", ".join(values)
            params = ", ".join(f":{c}" for c in values)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.text(f"UPDATE people SET {sets} WHERE id = :i"), {**values, "i": rnd.randint(1, ROWS)}
                    )
                    conn.execute(
                        sa.text(f"INSERT INTO people (id, {cols}) VALUES (:i, {params})"), {**values, "i": next_id}
                    )
                next_id += 1
                self.count += 1
            except sa.exc.DBAPIError as error:  # none expected: the test asserts there are none
                self.errors.append(str(error.orig)[:100])
            time.sleep(0.002)


def test_concurrent_writes_through_both_sides_during_the_backfill(case: Case, control_store: ControlStore) -> None:
    """A writer through the old columns runs throughout (the DDL too); one through the new columns
    starts once they exist; the backfill runs under both."""
    old, new = ("full_name", "first_name, last_name")
    if case.op == "merge":
        old, new = new, old
    with Writers(case.engine, old, 100_000) as old_writer:
        old_writer.wait_for(5)
        expand(case.target, case.spec)
        install_sync(case.target, case.spec)
        with Writers(case.engine, new, 200_000) as new_writer:
            new_writer.wait_for(5)
            before = (old_writer.count, new_writer.count)
            paced = ColumnBackfillSpec(chunk_rows=100, max_rows_per_second=1500)  # about 0.8 s: writers overlap it
            spec = case.spec.model_copy(update={"backfill": paced})
            report = backfill_columns(case.target, spec, control_store.engine)
            during = (old_writer.count - before[0], new_writer.count - before[1])
    assert old_writer.errors == [] and new_writer.errors == [], (old_writer.errors[:3], new_writer.errors[:3])
    assert report.complete and min(during) > 0, f"no concurrent writes on both sides during the backfill: {during}"
    print(f"{case.kind} {case.op}: writes old {old_writer.count}, new {new_writer.count}; during the backfill {during}")
    assert out_of_step(case.engine) == []
    assert validate_columns(case.target, case.spec).passed


def test_rows_written_through_either_side_are_in_step_though_the_move_is_lossy(
    case: Case, control_store: ControlStore
) -> None:
    """stop_sync's proof (``rows_out_of_step``) on a move whose ``up`` does not undo ``down``: a name of
    three words written through the split columns (or the merged one) comes back another way through
    ``up``, yet the row is in step; only a row written past the sync is not."""
    spec = case.spec.model_copy(
        update={"operations": (case.spec.operations[0].model_copy(update={"reversible": False}),)}
    )
    expand_sync_backfill(Case(case.op, case.kind, case.target, spec), control_store)
    with case.engine.begin() as conn:
        if case.op == "split":  # the new side: full_name follows as 'Mary Ann Smith', up splits it Mary / Ann
            conn.execute(sa.text("UPDATE people SET first_name = 'Mary Ann', last_name = 'Smith' WHERE id = 3"))
        else:  # the new side: the old pair follows as down, which up joins back another way
            conn.execute(sa.text("UPDATE people SET full_name = 'Mary Ann Smith' WHERE id = 3"))
    rows = read(case.engine, "full_name, first_name, last_name")
    assert rows[3][0] == "Mary Ann Smith"
    if case.op == "split":
        assert split(rows[3][0]) != rows[3][1:]  # up would not give the new side back
    assert rows_out_of_step(case.target, spec).passed
    with case.engine.begin() as conn:  # past the sync: the old side alone
        schema_dialect(case.engine).sync_off(conn)
        old = "full_name = 'Ada Lovelace'" if case.op == "split" else "first_name = 'Ada', last_name = 'Lovelace'"
        conn.execute(sa.text(f"UPDATE people SET {old} WHERE id = 4"))
    if case.kind == "sqlite":  # no session variable there: the triggers fired, and the row is in step
        assert rows_out_of_step(case.target, spec).passed
        return
    [check] = rows_out_of_step(case.target, spec).checks
    assert (check.mismatches, check.keys) == (1, ((4,),))


# -- rollback -------------------------------------------------------------------------------------
STAGES = ["expand", "sync", "backfill", "validate"]


def run_until(case: Case, stage: str, store: ControlStore) -> None:
    expand(case.target, case.spec)
    if stage != "expand":
        install_sync(case.target, case.spec)
    if stage in ("backfill", "validate"):
        assert backfill_columns(case.target, case.spec, store.engine).complete
    if stage == "validate":
        validate_columns(case.target, case.spec).require()


@pytest.mark.parametrize("stage", STAGES)
def test_rollback_from_each_stage_restores_the_table_exactly(
    case: Case, stage: str, control_store: ControlStore
) -> None:
    before = snapshot_table(case.engine, "people", ("id",))
    run_until(case, stage, control_store)
    assert snapshot_table(case.engine, "people", ("id",)) != before
    rollback_expansion(case.target, case.spec)
    assert snapshot_table(case.engine, "people", ("id",)) == before


def test_rollback_keeps_writes_made_through_the_new_columns(case: Case, control_store: ControlStore) -> None:
    columns = case.target.column_names()
    expand(case.target, case.spec)
    install_sync(case.target, case.spec)
    with case.engine.begin() as conn:
        if case.op == "split":
            conn.execute(sa.text("UPDATE people SET first_name = 'Ada', last_name = 'Lovelace' WHERE id = 3"))
            conn.execute(sa.text("INSERT INTO people (id, first_name, last_name) VALUES (9001, 'Alan', 'Turing')"))
        else:
            conn.execute(sa.text("UPDATE people SET full_name = 'Ada Lovelace' WHERE id = 3"))
            conn.execute(sa.text("INSERT INTO people (id, full_name) VALUES (9001, 'Alan Turing')"))
    rollback_expansion(case.target, case.spec)
    assert case.target.column_names() == columns
    old = "full_name" if case.op == "split" else "first_name, last_name"
    rows = read(case.engine, old)
    expected = {
        "split": [("Ada Lovelace",), ("Alan Turing",)],
        "merge": [("Ada", "Lovelace"), ("Alan", "Turing")],
    }
    assert [rows[3], rows[9001]] == expected[case.op]


# -- reversibility --------------------------------------------------------------------------------
def test_a_lossy_split_down_is_caught(split_case: Case, control_store: ControlStore) -> None:
    case = split_case
    lossy_down = JOIN[case.kind].format(a="first_name", b="last_name").replace("' '", "''")  # drops the space
    op = split_operation(case.kind, down=lossy_down)
    spec = base_spec(case.spec.database.url, op, "people-split")
    target = Target.of(case.engine, spec)
    expand(target, spec)
    assert backfill_columns(target, spec, control_store.engine).complete  # triggers not needed for this
    report = validate_columns(target, spec)
    expected = sum(1 for (full,) in read(case.engine, "full_name").values() if full is not None)
    assert [c.mismatches for c in report.checks] == [0, 0, expected]
    with pytest.raises(ColumnMismatchError) as caught:
        report.require()
    assert caught.value.what == "down(up(full_name)) = full_name" and caught.value.count == expected


def test_a_lossy_merge_down_is_caught(merge_case: Case, control_store: ControlStore) -> None:
    case = merge_case
    truncated = f"substr({LAST[case.kind].format(c='full_name')}, 1, 2)"  # keeps 2 characters of the last name
    op = merge_operation(case.kind, down={"first_name": FIRST[case.kind].format(c="full_name"), "last_name": truncated})
    spec = base_spec(case.spec.database.url, op, "people-merge")
    target = Target.of(case.engine, spec)
    expand(target, spec)
    assert backfill_columns(target, spec, control_store.engine).complete
    report = validate_columns(target, spec)
    expected = sum(1 for (_, last) in read(case.engine, "first_name, last_name").values() if last and len(last) > 2)
    assert expected > 0 and [c.mismatches for c in report.checks] == [0, 0, expected]
    with pytest.raises(ColumnMismatchError) as caught:
        report.require()
    assert caught.value.what == "down(up(first_name, last_name)) = last_name"


# -- through the plan -----------------------------------------------------------------------------
@pytest.fixture
def spec_file(tmp_path: Path) -> Iterator[Callable[[ExpandContractSpec], str]]:
    def write(spec: ExpandContractSpec) -> str:
        path = write_spec_file(tmp_path, spec, "change")
        return str(path)

    yield write


def test_the_plan_runs_rolls_back_and_contracts(
    case: Case, control_store: ControlStore, spec_file: Callable[..., str]
) -> None:
    before = snapshot_table(case.engine, "people", ("id",))
    originals = read(case.engine, "full_name" if case.op == "split" else "first_name, last_name")
    path, control, options = spec_file(case.spec), str(control_store.engine.url), RunOptions(auto_approve=True)
    assert run_schema_change(path, control, options, stop_after="validate")["ran"][-1] == "validate"
    rollback_schema_change(case.spec, control_store, "test")
    assert snapshot_table(case.engine, "people", ("id",)) == before
    report = run_schema_change(path, control, options, restart=True)
    assert (
        report["phase"] == Phase.DECOMMISSIONED
        and read_state(control_store, case.spec.name).phase is Phase.DECOMMISSIONED
    )
    if case.op == "split":
        assert read(case.engine, "first_name, last_name") == {i: split(f) for i, (f,) in originals.items()}
    else:
        assert read(case.engine, "full_name") == {i: (join(a, b),) for i, (a, b) in originals.items()}


# -- letter case and trailing spaces: exact on every engine --------------------------------------
def test_a_write_changing_only_letter_case_reaches_the_other_side(case: Case, control_store: ControlStore) -> None:
    """MariaDB's default collation holds 'Ada' = 'ada': the triggers and the validation must compare
    the text exactly, or the change is lost at contract."""
    expand_sync_backfill(case, control_store)
    with case.engine.begin() as conn:
        conn.execute(sa.text("UPDATE people SET full_name = 'f2 l74' WHERE id = 2"))  # was 'F2 L74'
        conn.execute(sa.text("UPDATE people SET first_name = 'f3' WHERE id = 3"))  # was 'F3'
        conn.execute(sa.text("UPDATE people SET last_name = 'l148' WHERE id = 4"))  # was 'L148'
    rows = read(case.engine, "full_name, first_name, last_name")
    assert [rows[2], rows[3], rows[4]] == [
        ("f2 l74", "f2", "l74"),
        ("f3 L111", "f3", "L111"),
        ("F4 l148", "F4", "l148"),
    ]
    assert validate_columns(case.target, case.spec).passed
    remove_sync(case.target, case.spec)  # plant a case-only difference behind the triggers
    with case.engine.begin() as conn:
        conn.execute(sa.text("UPDATE people SET full_name = 'F5 l185' WHERE id = 5"))  # was 'F5 L185'
    report = validate_columns(case.target, case.spec)
    assert sum(c.mismatches for c in report.checks) >= 1 and not report.passed


@pytest.mark.parametrize("op", ["split", "merge"])
def test_sqlite_triggers_do_not_loop_with_recursive_triggers_on(
    op: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    """SQLite's AFTER triggers write the row again; with ``recursive_triggers`` on, that write fires
    them once more, and their in-step guards must end it there (a loop fails the write with 'too many
    levels of trigger recursion')."""
    case = make_case(op, "sqlite", database_url("sqlite"))
    expand_sync_backfill(case, control_store)
    with case.engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA recursive_triggers = ON")
        conn.execute(sa.text("UPDATE people SET full_name = 'Ada Lovelace' WHERE id = 3"))
        conn.execute(sa.text("UPDATE people SET first_name = 'Grace', last_name = 'Hopper' WHERE id = 4"))
        conn.execute(sa.text("INSERT INTO people (id, first_name, last_name) VALUES (9001, 'Alan', 'Turing')"))
        conn.execute(sa.text("INSERT INTO people (id, full_name) VALUES (9002, 'Barbara Liskov')"))
        conn.exec_driver_sql("PRAGMA recursive_triggers = OFF")
    rows = read(case.engine, "full_name, first_name, last_name")
    assert [rows[3], rows[4], rows[9001], rows[9002]] == [
        ("Ada Lovelace", "Ada", "Lovelace"),
        ("Grace Hopper", "Grace", "Hopper"),
        ("Alan Turing", "Alan", "Turing"),
        ("Barbara Liskov", "Barbara", "Liskov"),
    ]
    assert out_of_step(case.engine) == []
