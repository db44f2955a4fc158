"""add_check and set_not_null on the real servers: violating rows counted and refused before any
DDL, the constraint added without a long lock (PostgreSQL NOT VALID then VALIDATE; MariaDB's NOT
NULL as INPLACE/LOCK=NONE), enforced on new writes, and undone by the rollback so the table is
exactly as before. Engines that cannot do it online are refused by the preflight, saying why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ENGINES, constant_writer, create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.columns import Target, rollback_expansion
from shiftover.schema.constraints import enforce_constraints, helper_check
from shiftover.schema.errors import ConstraintViolationError
from shiftover.schema.plan import build_schema_plan
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table

CHECK = {"op": "add_check", "name": "ck_orders_amount", "expression": "amount >= 0"}
NOT_NULL = {"op": "set_not_null", "column": "amount"}


def nullable(engine: sa.Engine, column: str) -> bool:
    return next(bool(c["nullable"]) for c in sa.inspect(engine).get_columns("orders") if c["name"] == column)


def checks(engine: sa.Engine) -> set[str]:
    return {str(c["name"]) for c in sa.inspect(engine).get_check_constraints("orders")}


def test_postgres_check_refused_over_violating_rows_then_added_not_valid_and_validated(
    database_url: Callable[[str], str],
) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=3_000)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = -amount WHERE id IN (5, 50, 500)"))
    spec = make_spec(url, operations=[CHECK])
    target = Target.of(engine, spec)
    check_change(spec)  # the expression plans; the violations are a data question, asked by the stage
    before = snapshot_table(engine, "orders", ("id",))
    with pytest.raises(ConstraintViolationError) as caught:
        enforce_constraints(target, spec)
    assert caught.value.count == 3 and caught.value.keys == ((5,), (50,), (500,)), caught.value
    assert "check ck_orders_amount (amount >= 0) fails" in str(caught.value)
    assert snapshot_table(engine, "orders", ("id",)) == before  # refused before any DDL

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = -amount WHERE amount < 0"))
    report = enforce_constraints(target, spec)
    assert report.statements == 2 and report.attempts == [1, 1]  # ADD ... NOT VALID, then VALIDATE, apart
    with engine.connect() as conn:
        validated = "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_orders_amount'"
        assert conn.execute(sa.text(validated)).scalar() is True
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = -1 WHERE id = 3"))
    assert enforce_constraints(target, spec).statements == 1  # a re-run only validates again

    rollback_expansion(target, spec)
    assert checks(engine) == set()
    assert snapshot_table(engine, "orders", ("id",)).checks == ()


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_set_not_null_refused_over_null_rows_then_set_online_and_rolled_back_exactly(
    kind: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=3_000)  # row 7's amount is NULL
    spec = make_spec(url, operations=[NOT_NULL])
    target = Target.of(engine, spec)
    check_change(spec)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = NULL WHERE id IN (70, 700)"))
    before = snapshot_table(engine, "orders", ("id",))
    with pytest.raises(ConstraintViolationError) as caught:
        enforce_constraints(target, spec)
    assert caught.value.count == 3 and caught.value.keys == ((7,), (70,), (700,)), caught.value
    assert snapshot_table(engine, "orders", ("id",)) == before

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
    before = snapshot_table(engine, "orders", ("id",))
    t0 = time.monotonic()
    report = enforce_constraints(target, spec)
    print(f"{kind}: set_not_null on 3000 rows in {time.monotonic() - t0:.3f}s, {report.statements} statement(s)")
    assert not nullable(engine, "amount")
    assert helper_check("orders", "amount") not in checks(engine)  # PostgreSQL's helper CHECK is gone
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders (id, amount) VALUES (99999, NULL)"))
    assert enforce_constraints(target, spec).statements == 0  # a re-run finds it done

    rollback_expansion(target, spec)
    assert snapshot_table(engine, "orders", ("id",)) == before


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_set_not_null_lets_writers_go_on(kind: str, database_url: Callable[[str], str]) -> None:
    """PostgreSQL scans in VALIDATE (ShareUpdateExclusiveLock: writers go on) and SET NOT NULL skips
    the scan; MariaDB rebuilds INPLACE with LOCK=NONE. A writer updating rows the whole time sees no
    error."""
    url = database_url(kind)
    engine = create_orders(url, rows=50_000)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
    # MariaDB's INPLACE rebuild ends under an exclusive metadata lock (see engines/mysql.py): room to retry
    spec = make_spec(url, operations=[NOT_NULL], lock={"timeout_ms": 200, "attempts": 200, "backoff_ms": 20})
    with constant_writer(url, 50_000) as writes:
        t0 = time.monotonic()
        report = enforce_constraints(Target.of(engine, spec), spec)
        seconds = time.monotonic() - t0
    assert writes.errors == [] and not nullable(engine, "amount")
    # PostgreSQL: ADD helper NOT VALID | VALIDATE | SET NOT NULL + DROP helper; MariaDB: one MODIFY
    assert report.statements == (4 if kind == "postgres" else 1)
    worst = max(writes.latencies) * 1000
    print(f"{kind}: set_not_null on 50k rows {seconds:.2f}s, {len(writes.latencies)} writes, worst {worst:.0f} ms")


def test_postgres_set_not_null_proves_it_from_the_validated_check(database_url: Callable[[str], str]) -> None:
    """PostgreSQL says at DEBUG1 when SET NOT NULL skips its scan because a valid CHECK proves it."""
    from shiftover.schema.engines import schema_dialect

    url = database_url("postgres")
    engine = create_orders(url, rows=1_000)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
    steps = schema_dialect(engine).set_not_null(None, "orders", "amount", "so_nn_orders_amount", False, 500)  # type: ignore[arg-type]
    notices: list[str] = []
    with engine.connect() as conn:
        conn.connection.driver_connection.add_notice_handler(lambda n: notices.append(n.message_primary))  # type: ignore[union-attr]
        for step in steps:
            with conn.begin():
                conn.execute(sa.text("SET LOCAL client_min_messages = debug1"))
                for statement in step:
                    conn.exec_driver_sql(statement)
    assert any("sufficient to prove that it does not contain nulls" in n for n in notices), notices
    assert not nullable(engine, "amount") and helper_check("orders", "amount") not in checks(engine)


def test_postgres_constraint_ddl_retries_while_a_lock_is_held(database_url: Callable[[str], str]) -> None:
    """ADD CONSTRAINT ... NOT VALID needs an AccessExclusiveLock: an open transaction that read the
    table makes it time out and retry until the transaction ends (reads never queue behind it long)."""
    url = database_url("postgres")
    engine = create_orders(url, rows=300)
    spec = make_spec(url, operations=[CHECK], lock={"timeout_ms": 100, "attempts": 60, "backoff_ms": 20})
    holder = sa.create_engine(url, poolclass=sa.pool.NullPool).connect()
    holder.begin()
    holder.execute(sa.text("SELECT count(*) FROM orders")).scalar()
    failures: list[BaseException] = []
    result: list[object] = []

    def run() -> None:
        try:
            result.append(enforce_constraints(Target.of(engine, spec), spec))
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    assert "ck_orders_amount" not in checks(engine)
    holder.rollback()
    holder.close()
    thread.join(timeout=60)
    assert not failures, failures
    report = result[0]
    assert report.lock_timeouts >= 2 and "ck_orders_amount" in checks(engine), report  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "op", "says"),
    [
        ("mariadb", CHECK, "ALGORITHM=COPY"),
        ("sqlite", CHECK, "12-step table rebuild"),
        ("sqlite", NOT_NULL, "12-step table rebuild"),
    ],
)
def test_an_engine_that_cannot_do_it_online_is_refused_by_the_preflight(
    kind: str, op: dict[str, str], says: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=10)
    spec = make_spec(url, operations=[{"op": "add_column", "column": "channel", "type": "varchar(20)"}, op])
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == "operations.1.op" and says in caught.value.problem, caught.value
    assert "block" in caught.value.problem or "locked" in caught.value.problem
    assert "channel" not in Target.of(engine, spec).column_names()


@pytest.mark.parametrize(
    ("kind", "op", "field", "says"),
    [
        ("postgres", {"op": "add_check", "name": "ck", "expression": "amout >= 0"}, "expression", "amout"),
        ("mariadb", {"op": "create_index", "name": "ix", "columns": ["nope"]}, "columns", "['nope']"),
        ("sqlite", {"op": "create_index", "name": "ix", "columns": ["channel"]}, "", ""),
        ("postgres", {"op": "set_not_null", "column": "id"}, "column", "NOT NULL already"),
        ("mariadb", {"op": "set_not_null", "column": "amout"}, "column", "no column 'amout'"),
    ],
)
def test_the_preflight_checks_columns_names_and_expressions(
    kind: str, op: dict[str, object], field: str, says: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    create_orders(url, rows=10)
    spec = make_spec(url, operations=[{"op": "add_column", "column": "channel", "type": "varchar(20)"}, op])
    if not field:  # an index on a column the same change adds is fine
        check_change(spec)
        return
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == f"operations.1.{field}" and says in caught.value.problem, caught.value


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("on_table", ["orders", "other"])
def test_an_existing_index_name_is_refused(kind: str, on_table: str, database_url: Callable[[str], str]) -> None:
    """Also on another table where the engine's index names are not per table (PostgreSQL: the
    schema's; SQLite: the database's): IF NOT EXISTS would skip the build and a rollback drop it."""
    url = database_url(kind)
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (id int PRIMARY KEY, note varchar(10))"))
        conn.execute(sa.text(f"CREATE INDEX ix_note ON {on_table} (note)"))
    spec = make_spec(url, operations=[{"op": "create_index", "name": "ix_note", "columns": ["amount"]}])
    if kind == "mariadb" and on_table == "other":  # per-table names there: no clash
        check_change(spec)
        return
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == "operations.0.name" and "index named 'ix_note' exists already" in caught.value.problem


def test_the_plan_adds_a_constrain_stage_only_for_constraints() -> None:
    plain = build_schema_plan(make_spec("sqlite:///unused.db"))
    assert "constrain" not in [s.name for s in plain]
    ops = [{"op": "create_index", "name": "ix", "columns": ["note"]}, CHECK, NOT_NULL]
    plan = build_schema_plan(make_spec("sqlite:///unused.db", operations=ops))
    names = [s.name for s in plan]
    assert names.index("validate") + 1 == names.index("constrain") == names.index("switch_reads") - 1
    assert "build index ix (note) online" in plan.stages[0].does
    assert plan.stages[names.index("constrain")].reversible


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_a_run_through_constrain_then_a_rollback_leaves_the_table_as_it_was(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=500)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
    ops = [
        {
            "op": "change_column",
            "column": "note",
            "to": "note_text",
            "type": "varchar(60)",
            "up": "note",
            "down": "note_text",
        },
        {"op": "create_index", "name": "ix_orders_note_text", "columns": ["note_text"]},
        NOT_NULL,
        *([CHECK] if kind == "postgres" else []),
    ]
    spec = make_spec(url, operations=ops)
    path = spec_file(tmp_path, spec, "change")
    before = snapshot_table(engine, "orders", ("id",))
    report = run_schema_change(
        str(path), str(control_store.engine.url), RunOptions(auto_approve=True), stop_after="constrain"
    )
    assert report["ran"] == ["expand", "sync", "backfill", "validate", "constrain"]
    assert read_state(control_store, spec.name).phase is Phase.VALIDATED
    assert not nullable(engine, "amount") and "ix_orders_note_text" in {
        i["name"] for i in sa.inspect(engine).get_indexes("orders")
    }
    rollback_schema_change(spec, control_store, "tester")
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_a_run_refused_at_constrain_resumes_there_once_the_rows_are_fixed(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=500)  # row 7's amount is NULL
    spec = make_spec(url, operations=[NOT_NULL, CHECK])
    path = spec_file(tmp_path, spec, "change")
    control, options = str(control_store.engine.url), RunOptions(auto_approve=True)
    with pytest.raises(ConstraintViolationError) as caught:
        run_schema_change(str(path), control, options, stop_after="constrain")
    assert caught.value.keys == ((7,),)
    state = read_state(control_store, spec.name)
    assert state.phase is Phase.VALIDATED and "constrain" not in state.completed
    assert nullable(engine, "amount") and checks(engine) == set()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE id = 7"))
    report = run_schema_change(str(path), control, options, stop_after="constrain")
    assert report["ran"] == ["constrain"]
    assert not nullable(engine, "amount") and checks(engine) == {"ck_orders_amount"}


@pytest.mark.parametrize(
    ("column", "definition"),
    [
        ("note", "VARCHAR(40) NULL DEFAULT 'x NOT NULL' COMMENT 'must become NOT NULL, it''s \"NULL\" now'"),
        ("note", "VARCHAR(40) DEFAULT NULL COMMENT 'DEFAULT NULL'"),
        ("at", "DATETIME NULL DEFAULT NULL COMMENT 'NOT NULL later'"),
    ],
)
def test_mariadb_not_null_keeps_the_columns_own_comment_and_default(
    column: str, definition: str, database_url: Callable[[str], str]
) -> None:
    """MariaDB's NOT NULL rewrites the column's SHOW CREATE TABLE line: a comment or a default that
    says NOT NULL or NULL is text, not the column's nullability, and comes through both ways unchanged."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=100)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 0 WHERE amount IS NULL"))
        if column == "at":
            conn.execute(sa.text("ALTER TABLE orders ADD COLUMN at DATETIME NULL"))
        conn.execute(sa.text(f"ALTER TABLE orders MODIFY {column} {definition}"))
        conn.execute(sa.text(f"UPDATE orders SET {column} = '2026-01-01 00:00:00' WHERE {column} IS NULL"))

    def described() -> tuple[object, ...]:
        query = (
            "SELECT column_type, is_nullable, column_default, column_comment FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'orders' AND column_name = :c"
        )
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(query), {"c": column}).one())

    before = described()
    assert before[1] == "YES"
    spec = make_spec(url, operations=[{"op": "set_not_null", "column": column}])
    target = Target.of(engine, spec)
    assert enforce_constraints(target, spec).statements == 1
    after = described()
    assert after[1] == "NO" and after[3] == before[3] and after[0] == before[0], (before, after)
    if before[2] not in (None, "NULL"):
        assert after[2] == before[2]  # a string default stays; DEFAULT NULL cannot stand beside NOT NULL
    assert enforce_constraints(target, spec).statements == 0  # a re-run finds it done

    rollback_expansion(target, spec)
    restored = described()
    assert restored[1] == "YES" and restored[3] == before[3] and restored[0] == before[0], (before, restored)


def test_mariadb_timestamp_not_null_is_refused_before_any_ddl(database_url: Callable[[str], str]) -> None:
    """10.11 answers 1846 to an INPLACE NOT NULL on a TIMESTAMP (checked by hand, with and without a
    DEFAULT): COPY would block writers, so the preflight refuses it, naming the column."""
    url = database_url("mariadb")
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders ADD COLUMN at TIMESTAMP NULL DEFAULT NULL"))
    before = snapshot_table(engine, "orders", ("id",))
    spec = make_spec(url, operations=[{"op": "set_not_null", "column": "at"}])
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == "operations.0.column" and "ALGORITHM=COPY" in str(caught.value), caught.value
    assert snapshot_table(engine, "orders", ("id",)) == before
