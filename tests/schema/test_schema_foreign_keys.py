"""add_foreign_key on the real servers: orphans counted and refused before any DDL, the key added
without a long lock (PostgreSQL NOT VALID then VALIDATE; MariaDB INPLACE with the server's check of
existing rows off, orphans counted before and after instead), enforced on new writes, and undone by
the rollback so the table is exactly as before. MariaDB needs an index on the columns first (a
create_index in the same spec); SQLite is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec

from shiftover.errors import SpecError
from shiftover.schema.columns import Target, rollback_expansion
from shiftover.schema.constraints import build_indexes, enforce_constraints
from shiftover.schema.errors import ConstraintViolationError
from shiftover.schema.preflight import check_change
from shiftover.schema.snapshot import snapshot_table

FK = {
    "op": "add_foreign_key",
    "name": "fk_orders_customer",
    "columns": ["customer_id"],
    "ref_table": "customers",
    "ref_columns": ["id"],
}
INDEX = {"op": "create_index", "name": "ix_orders_customer", "columns": ["customer_id"]}


def with_customers(url: str, rows: int = 2_000) -> sa.Engine:
    """orders (conftest's) with a customer_id for every row, 50 customers; row 7's is NULL."""
    engine = create_orders(url, rows=rows)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, name varchar(20))"))
        conn.execute(
            sa.text("INSERT INTO customers (id, name) VALUES " + ", ".join(f"({i}, 'c{i}')" for i in range(50)))
        )
        conn.execute(sa.text("ALTER TABLE orders ADD COLUMN customer_id int"))
        conn.execute(sa.text("UPDATE orders SET customer_id = MOD(id, 50) WHERE id <> 7"))
    return engine


def foreign_keys(engine: sa.Engine) -> list[str]:
    return [str(f["name"]) for f in sa.inspect(engine).get_foreign_keys("orders")]


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_orphans_refused_then_key_added_online_enforced_and_rolled_back_exactly(
    kind: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    engine = with_customers(url)
    spec = make_spec(url, operations=[INDEX, FK])
    target = Target.of(engine, spec)
    check_change(spec)
    before = snapshot_table(engine, "orders", ("id",))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET customer_id = 900 + id WHERE id IN (11, 12)"))
    build_indexes(target, spec)
    with pytest.raises(ConstraintViolationError) as caught:
        enforce_constraints(target, spec)
    assert caught.value.count == 2 and caught.value.keys == ((11,), (12,)), caught.value
    assert "not found in customers (id)" in str(caught.value)
    assert foreign_keys(engine) == []

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET customer_id = MOD(id, 50) WHERE id IN (11, 12)"))
    report = enforce_constraints(target, spec)
    assert foreign_keys(engine) == ["fk_orders_customer"]
    assert report.statements == (2 if kind == "postgres" else 1), report
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders (id, amount, customer_id) VALUES (99999, 1, 777)"))
    if kind == "postgres":
        with engine.connect() as conn:
            validated = "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_orders_customer'"
            assert conn.execute(sa.text(validated)).scalar() is True

    rollback_expansion(target, spec)
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_mariadb_asks_for_an_index_first(database_url: Callable[[str], str]) -> None:
    url = database_url("mariadb")
    engine = with_customers(url, rows=10)
    spec = make_spec(url, operations=[FK])
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == "operations.0.columns" and "Add a create_index" in caught.value.problem
    assert foreign_keys(engine) == []


@pytest.mark.parametrize(
    ("kind", "edit", "field", "says"),
    [
        ("sqlite", {}, "operations.1.op", "12-step table rebuild"),
        ("postgres", {"ref_table": "clients"}, "operations.1.ref_table", "no table 'clients'"),
        ("postgres", {"ref_columns": ["cid"]}, "operations.1.ref_columns", "['cid']"),
        ("mariadb", {"columns": ["client_id"]}, "operations.1.columns", "['client_id']"),
    ],
)
def test_the_preflight_refuses_what_cannot_work(
    kind: str, edit: dict[str, object], field: str, says: str, database_url: Callable[[str], str]
) -> None:
    url = database_url(kind)
    with_customers(url, rows=10)
    spec = make_spec(url, operations=[INDEX, FK | edit])
    with pytest.raises(SpecError) as caught:
        check_change(spec)
    assert caught.value.field == field and says in caught.value.problem, caught.value


def test_mariadb_refuses_a_key_name_another_table_uses(database_url: Callable[[str], str]) -> None:
    """MariaDB's foreign key names are database-wide (10.11 answers 1823 to a second one)."""
    url = database_url("mariadb")
    engine = with_customers(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE returns (id int PRIMARY KEY, customer_id int, KEY (customer_id))"))
        conn.execute(
            sa.text(
                "ALTER TABLE returns ADD CONSTRAINT fk_orders_customer "
                "FOREIGN KEY (customer_id) REFERENCES customers (id)"
            )
        )
    with pytest.raises(SpecError) as caught:
        check_change(make_spec(url, operations=[INDEX, FK]))
    assert caught.value.field == "operations.1.name" and "already" in caught.value.problem, caught.value


def test_mariadb_finds_orphans_written_while_the_key_was_added_and_takes_it_back(
    database_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB adds the key with its check of existing rows off: an orphan written between the first
    count and the ALTER is found by the count after, and the key is dropped again. The race is made
    certain by letting the first count miss the orphan."""
    import shiftover.schema.constraints as constraints

    url = database_url("mariadb")
    engine = with_customers(url, rows=100)
    spec = make_spec(url, operations=[INDEX, FK])
    target = Target.of(engine, spec)
    build_indexes(target, spec)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET customer_id = 999 WHERE id = 42"))
    real, calls = constraints.violations, []

    def first_count_misses(*args: object, **kwargs: object) -> ConstraintViolationError | None:
        calls.append(args[2])
        return None if len(calls) == 1 else real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(constraints, "violations", first_count_misses)
    with pytest.raises(ConstraintViolationError) as caught:
        enforce_constraints(target, spec)
    assert len(calls) == 2 and caught.value.keys == ((42,),) and "written while it was being added" in str(caught.value)
    assert foreign_keys(engine) == []  # taken back
