"""The default expectations in plain SQL (key unique, key not null, row count) on PostgreSQL,
MariaDB and SQLite, and Great Expectations kept for the expectations a spec declares."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from shiftover.checks.data import expectations_gate
from shiftover.checks.gate import GateContext
from shiftover.connect import get_engine
from shiftover.default_checks import is_default, run_default_checks
from shiftover.demo import create_orders, orders_table
from shiftover.expectations import default_suite
from shiftover.mapping import forget_reflections
from shiftover.migration import Migration, open_migration
from shiftover.spec import Expectation, GateSpec, parse_spec

from .conftest import spec_dict

ROWS = 200
KINDS = ["postgres", "mariadb", "sqlite"]


def loose_orders(url: str, rows: int = ROWS) -> sa.Table:
    """The demo orders without a primary key (id nullable): a target that lets bad keys in."""
    create_orders(get_engine(url), name="orders_src", rows=rows)
    loose = sa.Table(
        "orders",
        sa.MetaData(),
        *(sa.Column(c.name, c.type, nullable=True) for c in orders_table().columns),
    )
    engine = get_engine(url)
    loose.drop(engine, checkfirst=True)
    loose.create(engine)
    with engine.begin() as conn:
        cols = [c.name for c in loose.columns]
        conn.execute(sa.insert(loose).from_select(cols, sa.select(*orders_table("orders_src").columns)))
    return loose


def break_keys(url: str, table: sa.Table) -> None:
    """Ids 5 and 7 twice each, and one row with a NULL id: 203 rows where the source has 200."""
    with get_engine(url).begin() as conn:
        others = [c for c in table.columns if c.name != "id"]
        conn.execute(
            sa.insert(table).from_select(
                [c.name for c in table.columns], sa.select(table).where(table.c.id.in_([5, 7]))
            )
        )
        conn.execute(
            sa.insert(table).from_select(
                [c.name for c in table.columns],
                sa.select(sa.null().label("id"), *others).where(table.c.id == 9).limit(1),
            )
        )


@pytest.mark.parametrize("kind", KINDS)
def test_sql_checks_pass_on_a_good_table_and_name_null_and_duplicate_keys(database_url, kind) -> None:  # type: ignore[no-untyped-def]
    url = database_url(kind)
    table = loose_orders(url)
    suite = default_suite(["id"])
    good = run_default_checks(get_engine(url), table, ["id"], suite, ROWS)
    assert [(o.type, o.success, o.observed, o.checked_by) for o in good] == [
        ("expect_column_values_to_be_unique", True, "0", "sql"),
        ("expect_column_values_to_not_be_null", True, "0", "sql"),
        ("expect_table_row_count_to_equal", True, str(ROWS), "sql"),
    ]

    break_keys(url, table)
    unique, not_null, count = run_default_checks(get_engine(url), table, ["id"], suite, ROWS)
    assert not unique.success and unique.observed == "4"  # every row of a duplicated key, as GX counts
    assert unique.sample == ["5 ×2", "7 ×2"]
    assert not not_null.success and not_null.observed == "1"
    assert len(not_null.sample) == 1 and not_null.sample[0].startswith("(id=NULL, customer_id=")
    assert not count.success and count.observed == str(ROWS + 3) and count.kwargs == {"value": ROWS}


def test_a_composite_key_counts_duplicate_combinations_and_nulls_per_column(sqlite_database) -> None:  # type: ignore[no-untyped-def]
    url = sqlite_database()
    engine = get_engine(url)
    t = sa.Table(
        "pairs", sa.MetaData(), sa.Column("a", sa.Integer), sa.Column("b", sa.Integer), sa.Column("v", sa.Text)
    )
    t.create(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 2, "b": None}])
    unique, a_not_null, b_not_null, count = run_default_checks(engine, t, ["a", "b"], default_suite(["a", "b"]), 4)
    assert unique.type == "expect_compound_columns_to_be_unique" and unique.sample == ["(1, 2) ×2"]
    assert unique.observed == "2"  # (2, NULL) is no duplicate: its NULL is the not-null check's
    assert a_not_null.success and not b_not_null.success and b_not_null.sample == ["(a=2, b=NULL, v=NULL)"]
    assert count.success


def test_is_default_knows_the_default_suite_only() -> None:
    assert all(is_default(e, ["id"]) for e in default_suite(["id"]))
    assert not is_default(Expectation(type="expect_column_values_to_not_be_null", kwargs={"column": "note"}), ["id"])
    assert not is_default(Expectation(type="expect_table_row_count_to_equal", kwargs={"value": 3}), ["id"])


def open_loose(
    database_url: Callable[[str], str], kind: str, control_url: str, **extra: object
) -> tuple[Migration, sa.Table]:
    """A migration whose target passed preflight, then lost its primary key (a copy gone wrong)."""
    source, target = database_url(kind), database_url(kind)
    create_orders(get_engine(source), rows=ROWS)
    create_orders(get_engine(target), rows=ROWS)
    migration = open_migration(parse_spec(spec_dict(source, target, **extra)), control_url)
    table = loose_orders(target)
    forget_reflections()
    return migration, table


def test_the_gate_fails_naming_the_bad_keys_and_the_counts(database_url, control_store) -> None:  # type: ignore[no-untyped-def]
    migration, table = open_loose(database_url, "sqlite", str(control_store.engine.url))
    ok = expectations_gate(GateContext(migration, "validate"), GateSpec(name="expectations"))
    assert ok.passed, ok.summary
    assert ok.metrics["checked_by_sql"] == 3 and ok.metrics["checked_by_great_expectations"] == 0

    break_keys(migration.spec.target.url, table)
    bad = expectations_gate(GateContext(migration, "validate"), GateSpec(name="expectations"))
    assert not bad.passed
    assert "expect_column_values_to_be_unique on id (4 rows, e.g. 5 ×2, 7 ×2)" in bad.summary
    assert "expect_column_values_to_not_be_null on id (1 rows, e.g. (id=NULL" in bad.summary
    assert f"expect_table_row_count_to_equal (target {ROWS + 3} rows, expected {ROWS})" in bad.summary
    assert [r["checked_by"] for r in bad.rows] == ["sql"] * 3
    assert "5 ×2" in bad.markdown


@pytest.mark.parametrize("kind", KINDS)
def test_a_declared_suite_still_runs_in_great_expectations(database_url, control_store, kind) -> None:  # type: ignore[no-untyped-def]
    too_tight = {"column": "amount", "min_value": 0, "max_value": 10}
    migration, _table = open_loose(
        database_url,
        kind,
        str(control_store.engine.url),
        expectations=[{"type": "expect_column_values_to_be_between", "kwargs": too_tight}],
    )
    result = expectations_gate(GateContext(migration, "validate"), GateSpec(name="expectations"))
    assert not result.passed
    declared, *defaults = result.rows
    assert declared["checked_by"] == "great_expectations" and declared["success"] is False and declared["sample"]
    assert [(r["checked_by"], r["success"]) for r in defaults] == [("sql", True)] * 3
    assert "failed: expect_column_values_to_be_between on amount (" in result.summary


def test_the_default_suite_alone_never_imports_great_expectations(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    create_orders(get_engine(source), rows=50)
    create_orders(get_engine(target), rows=50)
    code = f"""
import sys
from shiftover.checks.data import expectations_gate
from shiftover.checks.gate import GateContext
from shiftover.migration import open_migration
from shiftover.spec import GateSpec, parse_spec
spec = parse_spec({spec_dict(source, target)!r})
m = open_migration(spec, "sqlite:///{tmp_path}/control.db")
result = expectations_gate(GateContext(m, "validate"), GateSpec(name="expectations"))
print(result.passed, "great_expectations" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_only_a_stage_with_declared_expectations_preloads_great_expectations(monkeypatch, open_orders) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    import shiftover.expectations
    from shiftover.flows.context import preload_expectations
    from shiftover.plan import build_plan

    calls: list[str] = []
    monkeypatch.setattr(shiftover.expectations, "preload_great_expectations", lambda: calls.append("gx"))
    declared = [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status"}, "stages": ["validate"]}]
    for migration, expected in ((open_orders(), []), (open_orders(expectations=declared), ["validate"])):
        preloaded = []
        for stage in build_plan(migration.spec):
            calls.clear()
            preload_expectations(SimpleNamespace(migration=migration), stage)  # type: ignore[arg-type]
            preloaded += [stage.name] * len(calls)
        assert preloaded == expected


def test_a_preloaded_great_expectations_is_waited_for() -> None:
    code = (
        "import sys, shiftover.expectations as e; e.preload_great_expectations(); "
        "print(e.expectation_class('expect_column_values_to_not_be_null').__name__, e._preloading.is_alive())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ExpectColumnValuesToNotBeNull", "False"]


def test_a_walk_that_will_reach_declared_expectations_preloads_great_expectations_at_its_start(
    monkeypatch, open_orders
) -> None:  # type: ignore[no-untyped-def]
    """The import starts when the walk begins (it overlaps dual-write and backfill), but only when a
    stage the walk will reach declares expectations: not for a run stopping before validate, nor
    for another stage flow."""
    from types import SimpleNamespace

    import shiftover.expectations
    from shiftover.flows.context import preload_for_walk
    from shiftover.plan import build_plan
    from shiftover.plan.state import read_state

    calls: list[str] = []
    monkeypatch.setattr(shiftover.expectations, "preload_great_expectations", lambda: calls.append("gx"))
    declared = [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status"}, "stages": ["validate"]}]
    migration = open_orders(expectations=declared)
    ctx = SimpleNamespace(
        migration=migration, plan=build_plan(migration.spec), state=lambda: read_state(migration.store, migration.name)
    )
    walks = {
        "whole plan": (None, None),
        "stop after validate": (None, "validate"),
        "validate flow": ({"validate"}, None),
        "stop after dual_write": (None, "dual_write"),
        "stop after backfill": (None, "backfill"),
        "backfill flow": ({"backfill"}, None),
    }
    preloaded = []
    for name, (flows, stop_after) in walks.items():
        calls.clear()
        preload_for_walk(ctx, flows, stop_after)  # type: ignore[arg-type]
        preloaded += [name] * len(calls)
    assert preloaded == ["whole plan", "stop after validate", "validate flow"]
    calls.clear()
    plain = open_orders()
    preload_for_walk(SimpleNamespace(migration=plain, plan=build_plan(plain.spec), state=ctx.state), None, None)  # type: ignore[arg-type]
    assert calls == []  # nothing declared: the default suite runs in SQL
