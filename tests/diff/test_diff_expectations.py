"""The Great Expectations gate: default suite, declared expectations, blocking and warning paths."""

from __future__ import annotations

import subprocess
import sys

from shiftover.checks.data import expectations_gate
from shiftover.checks.gate import GateContext
from shiftover.spec import GateSpec

from .conftest import break_target


def test_default_suite_passes_on_a_full_copy_and_fails_on_a_short_one(open_orders, orders_urls) -> None:  # type: ignore[no-untyped-def]
    m = open_orders()
    ok = expectations_gate(GateContext(m, "validate"), GateSpec(name="expectations"))
    assert ok.passed, ok.summary
    assert [r["expectation"] for r in ok.rows] == [
        "expect_column_values_to_be_unique",
        "expect_column_values_to_not_be_null",
        "expect_table_row_count_to_equal",
    ]

    break_target(orders_urls[1])  # one row fewer than the source
    short = expectations_gate(GateContext(m, "validate"), GateSpec(name="expectations"))
    assert not short.passed
    assert "failed: expect_table_row_count_to_equal" in short.summary
    row_count = next(r for r in short.rows if r["expectation"] == "expect_table_row_count_to_equal")
    assert row_count["observed"] == "599"


def test_a_failing_blocking_expectation_blocks_and_a_warning_does_not(open_orders) -> None:  # type: ignore[no-untyped-def]
    in_range = {"column": "amount", "min_value": 0, "max_value": 100_000}
    too_tight = {"column": "amount", "min_value": 0, "max_value": 10}
    statuses = {"column": "status", "value_set": ["new", "paid", "shipped", "delivered", "cancelled"]}

    warned = open_orders(
        expectations=[
            {"type": "expect_column_values_to_be_between", "kwargs": in_range},
            {"type": "expect_column_values_to_be_in_set", "kwargs": statuses},
            {"type": "expect_column_values_to_be_between", "kwargs": too_tight, "severity": "warning"},
        ]
    )
    result = expectations_gate(GateContext(warned, "validate"), GateSpec(name="expectations"))
    assert result.passed
    assert "warnings: expect_column_values_to_be_between" in result.summary
    assert result.metrics["warnings"] == 1 and result.metrics["failed"] == 0

    blocked = open_orders(expectations=[{"type": "expect_column_values_to_be_between", "kwargs": too_tight}])
    result = expectations_gate(GateContext(blocked, "validate"), GateSpec(name="expectations"))
    assert not result.passed
    assert result.rows[0]["success"] is False and result.rows[0]["sample"]


def test_missing_column_and_unknown_expectation_fail_with_a_reason(open_orders) -> None:  # type: ignore[no-untyped-def]
    missing = open_orders(expectations=[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}])
    result = expectations_gate(GateContext(missing, "validate"), GateSpec(name="expectations"))
    assert not result.passed and "nope" in result.rows[0]["error"]

    unknown = open_orders(expectations=[{"type": "expect_the_moon", "kwargs": {}}])
    result = expectations_gate(GateContext(unknown, "validate"), GateSpec(name="expectations"))
    assert not result.passed and "unknown expectation 'expect_the_moon'" in result.summary


def test_gates_and_validate_flow_do_not_import_great_expectations() -> None:
    code = (
        "import sys, shiftover.checks.data, shiftover.checks.report, shiftover.flows.validate; "
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_expectations_run_only_in_the_stages_they_name(open_orders) -> None:  # type: ignore[no-untyped-def]
    from shiftover.checks.gate import run_gate

    too_tight = {"column": "amount", "min_value": 0, "max_value": 10}
    m = open_orders(
        expectations=[
            {"type": "expect_column_values_to_be_between", "kwargs": too_tight, "stages": ["switch_writes"]},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status"}},
        ]
    )
    validate = run_gate(GateContext(m, "validate"), GateSpec(name="expectations"))
    switch = run_gate(GateContext(m, "switch_writes"), GateSpec(name="expectations"))

    declared_validate = [(r["expectation"], r["kwargs"]) for r in validate.rows[:1]]
    assert validate.passed and declared_validate == [("expect_column_values_to_not_be_null", "column=status")]
    assert len(validate.rows) == 1 + 3  # plus the default suite: key unique, key not null, row count
    assert not switch.passed and switch.rows[0]["expectation"] == "expect_column_values_to_be_between"
    assert len(switch.rows) == 2 + 3
