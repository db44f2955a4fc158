"""The default expectations (key unique, key not null, row count) answered in plain SQL.

Great Expectations costs about 3 s to import and 0.5 s a suite on 100k SQLite rows for what
two aggregate queries answer in milliseconds (``bench/gates.py``), so the expectations gate
runs the default suite here and hands only the spec's own expectations to GX. The outcomes
have the same shape as GX's (``ExpectationOutcome``): the count of failing rows as the
observed value, and a few failing keys (duplicated keys with their count, or the rows whose
key is NULL) as the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.expectations import ExpectationOutcome, default_suite
from shiftover.spec import Expectation

SAMPLE = 5  # failing keys (or rows with a NULL key) named per check

UNIQUE = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")
NOT_NULL = "expect_column_values_to_not_be_null"
ROW_COUNT = "expect_table_row_count_to_equal"


def is_default(exp: Expectation, key: Sequence[str]) -> bool:
    """Whether ``exp`` is one of the default suite's checks for ``key`` (same type and arguments)."""
    return any(exp.type == d.type and exp.kwargs == d.kwargs for d in default_suite(key))


def run_default_checks(
    engine: Engine, table: sa.Table, key: Sequence[str], checks: Sequence[Expectation], source_rows: int
) -> list[ExpectationOutcome]:
    """Answer ``checks`` (each ``is_default``) against ``table``: one count query, plus one
    GROUP BY when uniqueness is asked, plus sample queries only when something fails."""
    with engine.connect() as conn:
        counts = _counts(conn, table, key)
        duplicates = _duplicates(conn, table, key) if any(c.type in UNIQUE for c in checks) else None
        return [_outcome(conn, table, key, c, counts, duplicates, source_rows) for c in checks]


def _counts(conn: sa.Connection, table: sa.Table, key: Sequence[str]) -> dict[str, int]:
    """The row count (``""``) and the NULLs of each key column, in one scan."""
    nulls = [(sa.func.count() - sa.func.count(table.c[k])).label(f"n{i}") for i, k in enumerate(key)]
    row = conn.execute(sa.select(sa.func.count(), *nulls).select_from(table)).one()
    return {"": int(row[0]), **{k: int(row[i + 1] or 0) for i, k in enumerate(key)}}


def _duplicates(conn: sa.Connection, table: sa.Table, key: Sequence[str]) -> tuple[int, list[str]]:
    """Rows whose key occurs more than once, as GX counts them, and a few such keys. A key with a
    NULL in it is left to the not-null check (GX's compound check may count it here as well)."""
    cols = [table.c[k] for k in key]
    groups = (
        sa.select(*cols, sa.func.count().label("so_n"))
        .where(*(c.is_not(None) for c in cols))
        .group_by(*cols)
        .having(sa.func.count() > 1)
        .subquery("so_dup")
    )
    rows = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(groups.c.so_n), 0))).scalar_one())
    if not rows:
        return 0, []
    group_keys = [groups.c[k] for k in key]
    sample = conn.execute(sa.select(*group_keys, groups.c.so_n).order_by(*group_keys).limit(SAMPLE))
    return rows, [f"{_key_text(r[:-1])} ×{r[-1]}" for r in sample]


def _null_rows(conn: sa.Connection, table: sa.Table, column: str) -> list[str]:
    """A few rows whose ``column`` is NULL, named by their first columns (the key cannot name them)."""
    shown = list(table.c)[:4]
    query = sa.select(*shown).where(table.c[column].is_(None)).limit(SAMPLE)
    return [
        "(" + ", ".join(f"{c.name}={_text(v)}" for c, v in zip(shown, r, strict=True)) + ")"
        for r in conn.execute(query)
    ]


def _outcome(
    conn: sa.Connection,
    table: sa.Table,
    key: Sequence[str],
    check: Expectation,
    counts: dict[str, int],
    duplicates: tuple[int, list[str]] | None,
    source_rows: int,
) -> ExpectationOutcome:
    kwargs: dict[str, Any] = dict(check.kwargs)
    if check.type in UNIQUE:
        assert duplicates is not None
        failing, sample = duplicates
    elif check.type == NOT_NULL:
        failing = counts[check.kwargs["column"]]
        sample = _null_rows(conn, table, check.kwargs["column"]) if failing else []
    elif check.type == ROW_COUNT:  # against the source's count, taken around these queries
        kwargs = {"value": source_rows}
        return _verdict(check, kwargs, counts[""] == source_rows, str(counts[""]), [])
    else:
        raise ValueError(f"{check.type} is not a default check (see is_default)")
    return _verdict(check, kwargs, failing == 0, str(failing), sample)


def _verdict(
    check: Expectation, kwargs: dict[str, Any], success: bool, observed: str, sample: list[str]
) -> ExpectationOutcome:
    plain = {k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in kwargs.items()}
    return ExpectationOutcome(
        type=check.type,
        kwargs=plain,
        severity=check.severity,
        success=success,
        observed=observed,
        sample=sample,
        checked_by="sql",
    )


def _key_text(values: Sequence[Any]) -> str:
    return _text(values[0]) if len(values) == 1 else "(" + ", ".join(_text(v) for v in values) + ")"


def _text(value: Any) -> str:
    return "NULL" if value is None else str(value)
