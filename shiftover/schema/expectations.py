"""The spec's Great Expectations suite on the changed table, run by the validate stage.

The in-database checks (``shiftover.schema.validate``) prove each new column equals ``up(old)``;
these say what the data must look like (a range, no NULLs), through the table move's own
machinery (``shiftover.expectations.run_expectations``: in the database, a fresh ephemeral context,
GX imported only when a spec declares expectations). They run after those checks, when the new
columns exist and are filled. A failed blocking expectation stops the run at validate; a
``severity: warning`` one is reported and never blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shiftover.errors import DiffError, SpecError
from shiftover.expectations import ExpectationOutcome, build_expectations, expectation_class, run_expectations
from shiftover.schema.columns import Target
from shiftover.schema.errors import ExpectationsFailedError
from shiftover.schema.spec import ExpandContractSpec
from shiftover.spec import Expectation

# the kwargs of GX expectations that name one column, and those that name several
_ONE_COLUMN = ("column", "column_A", "column_B")
_COLUMN_LISTS = ("column_list",)


def named_columns(exp: Expectation) -> list[tuple[str, Any]]:
    """(kwargs field, column name) for every column the expectation names."""
    named = [(k, exp.kwargs[k]) for k in _ONE_COLUMN if k in exp.kwargs]
    for k in _COLUMN_LISTS:
        value = exp.kwargs.get(k)
        if isinstance(value, list | tuple):
            named += [(f"{k}.{j}", c) for j, c in enumerate(value)]
    return named


def check_expectations(spec: ExpandContractSpec, columns: Sequence[str]) -> None:
    """Before any DDL: each expectation names only ``columns`` (the table's and those the change
    adds), and Great Expectations knows its name and takes its kwargs; else ``SpecError`` naming
    the field (``expectations.<i>.kwargs.column``, ``.type`` or ``.kwargs``)."""
    for i, exp in enumerate(spec.expectations):
        for field, column in named_columns(exp):
            if column not in columns:
                raise SpecError(
                    f"expectations.{i}.kwargs.{field}",
                    f"no column {column!r} in table {spec.database.table!r} nor added by this change "
                    f"(columns after expand: {list(columns)})",
                )
    for i, exp in enumerate(spec.expectations):
        try:
            expectation_class(exp.type)
        except DiffError as exc:
            raise SpecError(f"expectations.{i}.type", str(exc)) from None
        try:
            build_expectations([exp])
        except DiffError as exc:
            raise SpecError(f"expectations.{i}.kwargs", str(exc)) from None


@dataclass(frozen=True)
class ExpectationsReport:
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        """The blocking expectations that failed (warnings never block)."""
        return tuple(o for o in self.outcomes if not o.success and o.severity == "blocking")

    @property
    def passed(self) -> bool:
        return not self.failed

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per expectation: the audit entry's and the table artifact's rows."""
        return [o.as_row() for o in self.outcomes]

    def summary(self) -> str:
        met = sum(o.success for o in self.outcomes)
        text = f"{met}/{len(self.outcomes)} expectations met"
        warned = [o for o in self.outcomes if not o.success and o.severity == "warning"]
        if warned:
            text += f"; warnings: {'; '.join(describe(o) for o in warned)}"
        return text

    def require(self) -> ExpectationsReport:
        """Raise ``ExpectationsFailedError`` naming every failed blocking expectation."""
        if self.failed:
            raise ExpectationsFailedError([describe(o) for o in self.failed])
        return self


def describe(outcome: ExpectationOutcome) -> str:
    """The expectation, its kwargs and what GX observed: the unexpected rows' count (column-map
    expectations) or the observed value, a few unexpected values, or the error GX caught."""
    kwargs = ", ".join(f"{k}={v}" for k, v in outcome.kwargs.items())
    text = f"{outcome.type}({kwargs})"
    if outcome.error:
        return f"{text}: error {outcome.error.rstrip('.')}"
    text += f": observed {outcome.observed or 'nothing'}"
    examples = [v for v in outcome.sample if v != "None"][:5]
    return text + (f" (unexpected values e.g. {', '.join(examples)})" if examples else "")


def run_change_expectations(target: Target, spec: ExpandContractSpec) -> ExpectationsReport:
    """The spec's expectations on the changed table, in its database."""
    outcomes = run_expectations(target.engine, target.table, spec.expectations, schema=target.schema)
    return ExpectationsReport(tuple(outcomes))
