"""``version_schema``: the new version of the table as a view in a schema of its own (PostgreSQL; a
database on MariaDB), so code that does not read Shiftover's flags switches by its search_path (or
its database). Through the view, on the real servers: the table as it will be after contract
(new columns, not the old or dropped ones), inserts naming only the new columns (the sync trigger
fills the old), updates followed by the old column; a rollback drops the schema and leaves the
table exactly as it was; contract drops it too. SQLite, and a schema that exists, are refused."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, spec_file

from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.schema.snapshot import snapshot_table
from shiftover.schema.spec import ExpandContractSpec


def version_of(url: str) -> str:
    """The version schema's name: MariaDB's databases are server-wide, so each test's is its own."""
    parsed = sa.engine.make_url(url)
    return "orders_v2" if parsed.get_backend_name() == "sqlite" else f"{parsed.database}_v2"


def versioned_spec(url: str) -> ExpandContractSpec:
    base = make_spec(url)
    operations = [op.model_dump(mode="json", by_alias=True) for op in base.operations]
    return make_spec(
        url, operations=[*operations, {"op": "drop_column", "column": "note"}], version_schema=version_of(url)
    )


def new_version(url: str) -> sa.Engine:
    """The new code's connection: search_path on the version schema, then the table's (PostgreSQL),
    or the version database (MariaDB)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(url, connect_args={"options": f"-c search_path={version_of(url)},public"})
    return sa.create_engine(parsed.set(database=version_of(url)))


def version_exists(engine: sa.Engine, url: str) -> bool:
    query = (
        "SELECT count(*) FROM pg_namespace WHERE nspname = :s"
        if engine.dialect.name == "postgresql"
        else "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"
    )
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(query), {"s": version_of(url)}).scalar())


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_new_code_uses_the_version_schema_until_contract(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=100)
    spec = versioned_spec(url)
    path, control, options = (
        str(spec_file(tmp_path, spec)),
        str(control_store.engine.url),
        RunOptions(auto_approve=True),
    )
    run_schema_change(path, control, options, stop_after="switch_writes")

    v2 = new_version(url)
    try:
        with v2.begin() as conn:
            shown = list(conn.execute(sa.text("SELECT * FROM orders WHERE id = 2")).mappings().one())
            assert shown == ["id", "amount_cents", "channel"], shown  # no amount, no note
            conn.execute(sa.text("INSERT INTO orders (id, amount_cents) VALUES (9001, 12345)"))
            conn.execute(sa.text("UPDATE orders SET amount_cents = 777 WHERE id = 3"))
    finally:
        v2.dispose()
    with engine.connect() as conn:  # the table itself, read by plain SQL
        rows = conn.execute(sa.text("SELECT id, amount, amount_cents FROM orders WHERE id IN (3, 9001) ORDER BY id"))
        assert [tuple(r) for r in rows] == [(3, Decimal("7.77"), 777), (9001, Decimal("123.45"), 12345)]

    report = run_schema_change(path, control, options)
    assert report["phase"] == Phase.DECOMMISSIONED
    assert not version_exists(engine, url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT amount_cents FROM orders WHERE id = 9001")).scalar() == 12345


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_a_rollback_drops_the_version_schema_and_leaves_the_table_as_it_was(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=100)
    before = snapshot_table(engine, "orders", ("id",))
    spec = versioned_spec(url)
    run_schema_change(str(spec_file(tmp_path, spec)), str(control_store.engine.url), RunOptions(), stop_after="sync")
    assert version_exists(engine, url)
    rollback_schema_change(spec, control_store, "test")
    assert not version_exists(engine, url)
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_sqlite_and_a_schema_that_exists_are_refused_before_any_ddl(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    sqlite = database_url("sqlite")
    create_orders(sqlite, rows=10)
    with pytest.raises(SpecError, match=r"version_schema.*SQLite has no schemas"):
        run_schema_change(
            str(spec_file(tmp_path, versioned_spec(sqlite), "s")), str(control_store.engine.url), RunOptions()
        )

    url = database_url("postgres")
    engine = create_orders(url, rows=10)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {version_of(url)}"))
    before = snapshot_table(engine, "orders", ("id",))
    spec = make_spec(url, name="orders-pg", version_schema=version_of(url))
    with pytest.raises(SpecError, match=r"version_schema.*exists already"):
        run_schema_change(str(spec_file(tmp_path, spec, "p")), str(control_store.engine.url), RunOptions())
    assert snapshot_table(engine, "orders", ("id",)) == before
