"""What the rehearsal concludes: findings, each naming the spec field to change.

Rows already in the target (``on_existing``), rows the target refused (grouped by the column the
database error names), and values that came back changed. Values compare by
``diff.equality.values_equal``, except decimals: by value, not at the larger declared scale, since
a value the target rounded to its scale is exactly what the rehearsal is for.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shiftover.diff.equality import values_equal
from shiftover.diff.normalize import ColumnRule
from shiftover.errors import DiffError, describe_error
from shiftover.mapping import TableMapping
from shiftover.spec import MigrationSpec

Row = tuple[Any, ...]
Key = tuple[Any, ...]


@dataclass(frozen=True)
class Finding:
    """One problem a run would meet, and the spec field to change."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


def field_of(spec: MigrationSpec, target_column: str) -> str:
    """The spec field that decides a target column: ``columns.<i>.target`` (``.name``, ``.sql``), or
    ``columns`` when the spec copies every column by its own name."""
    for i, col in enumerate(spec.columns):
        if col.target_name == target_column:
            if col.sql is not None:
                return f"columns.{i}.sql"
            return f"columns.{i}.target" if col.target else f"columns.{i}.name"
    return "columns"


def named_columns(text: str, columns: Sequence[str]) -> list[str]:
    """The columns a database error names, as the engines quote them: PostgreSQL ``column "x"`` and
    ``column x:`` (COPY), MariaDB ``'x'`` and `` `x` ``, SQLite ``table.x``."""
    found = []
    for name in columns:
        n = re.escape(name)
        patterns = (rf'column "?{n}"?\b', rf"'{n}'", rf"`{n}`", rf"\.{n}\b", rf'"{n}"')
        if any(re.search(p, text) for p in patterns):
            found.append(name)
    return found


def error_text(exc: BaseException) -> str:
    """A driver error in one line, with PostgreSQL's context (the COPY line and column) when it has one."""
    orig = getattr(exc, "orig", None) or exc
    text = describe_error(orig)
    diag = getattr(orig, "diag", None)
    context = getattr(diag, "context", None) if diag is not None else None
    return f"{text} ({context.splitlines()[0]})" if context else text


def judge_existing(
    spec: MigrationSpec, has_rows: bool, existing: set[Key], sampled: int, *, restarted: bool
) -> tuple[list[Finding], list[str]]:
    """Rows the target held before the rehearsal: a finding under ``on_existing: fail`` (findings, notes)."""
    if not has_rows:
        return [], []
    if restarted:
        return [], ["the target holds the rows of the run before the rollback: they are kept and topped up"]
    if spec.on_existing == "overwrite":
        return [], [
            f"the target already holds rows ({len(existing)} of {sampled} sampled keys); on_existing: "
            "overwrite, so the validate stage's repair replaces them with the source's rows"
        ]
    first = min(existing, key=repr, default=None)
    where = f", {len(existing)} of the {sampled} sampled source keys (first {first})" if existing else ""
    return [
        Finding(
            "on_existing",
            f"the target table {spec.target.table!r} already holds rows"
            + (where or ", none under the sampled source keys")
            + ": empty it, or set on_existing: overwrite to have the source's rows replace them",
        )
    ], []


def judge_refusals(
    spec: MigrationSpec,
    mapping: TableMapping,
    failures: Sequence[tuple[Row, BaseException]],
    attempted: int,
    key_of: Callable[[Row], Key],
) -> list[Finding]:
    """Rows the target refused, one finding per column named and kind of error."""
    groups: dict[tuple[str, str], list[tuple[Row, BaseException]]] = defaultdict(list)
    for row, exc in failures:
        named = (
            [exc.so_column]
            if hasattr(exc, "so_column")
            else named_columns(error_text(exc), list(mapping.target_columns))
        )
        column = named[0] if named else ""
        groups[(column, type(getattr(exc, "orig", None) or exc).__name__)].append((row, exc))
    findings = []
    for (column, _), items in groups.items():
        row, exc = items[0]
        findings.append(
            Finding(
                field_of(spec, column) if column else "target.table",
                (f"column {column!r}: " if column else "")
                + f"the target refused {len(items)} of {attempted} rehearsed row(s), first key {key_of(row)}: "
                + error_text(exc).splitlines()[0]
                + _refusal_fix(error_text(exc), column),
            )
        )
    return findings


def _refusal_fix(text: str, column: str) -> str:
    """What to do about a refusal whose cause the error names."""
    lowered = text.lower()
    if "nan" in lowered.split() or "'nan'" in lowered or "infinity" in lowered:
        return (
            f"; the target's type holds no NaN or infinity (MariaDB DECIMAL, say): map {column or 'the column'} "
            "through columns[].sql (e.g. NULLIF(v, 'NaN')) if NULL may stand for it, or keep it in a PostgreSQL target"
        )
    if "0000-00-00" in text:
        return (
            "; a MariaDB zero date has no equivalent here: map it through columns[].sql (e.g. "
            "NULLIF(v, '0000-00-00')) if NULL may stand for it, or keep a MariaDB target"
        )
    return ""


def judge_values(
    spec: MigrationSpec,
    mapping: TableMapping,
    expected: Sequence[Row],
    back: dict[Any, Row],
    rules: dict[str, ColumnRule],
    token_of: Callable[[Row], Any],
    key_of: Callable[[Row], Key],
) -> list[Finding]:
    """Each expected row against the row read back under its key (``back`` by key token)."""
    cols = mapping.target_columns
    strict = {t: (dataclasses.replace(r, scale=None) if r.kind == "decimal" else r) for t, r in rules.items()}
    diffs: dict[str, list[tuple[Key, Any, Any]]] = defaultdict(list)
    missing: list[Key] = []
    for row in expected:
        actual = back.get(token_of(row))
        if actual is None:
            missing.append(key_of(row))
            continue
        for i, col in enumerate(cols):
            rule = strict.get(col)
            if rule is not None and not _equal(rule, row[i], actual[i], spec):
                diffs[col].append((key_of(row), row[i], actual[i]))
    findings = []
    if missing:
        findings.append(
            Finding(
                "key",
                f"{len(missing)} rehearsed row(s) were not found under their key after the write (first {missing[0]}): "
                "two source keys are equal in the target (its collation or key type)",
            )
        )
    for col, items in diffs.items():
        key, was, became = items[0]
        findings.append(
            Finding(
                field_of(spec, col),
                f"column {col!r} changes on the way in {len(items)} of {len(expected)} rehearsed row(s), first key "
                f"{key}: {_shown(was)} came back as {_shown(became)} {_why(was, became)}",
            )
        )
    return findings


def _why(was: Any, became: Any) -> str:
    """What the change looks like, and what to do about it."""
    if became is None and isinstance(was, str) and was.strip() == "null":
        return (
            "(a JSON null written as SQL NULL: this engine pair's copy reads a JSON null as NULL and cannot keep "
            "it yet, so the run stops here instead of altering it; PostgreSQL and MariaDB sources into "
            "PostgreSQL keep it)"
        )
    return (
        "(truncated, rounded or re-formatted by the target's type): widen the target column or convert the "
        "value in the mapping"
    )


def _equal(rule: ColumnRule, a: Any, b: Any, spec: MigrationSpec) -> bool:
    try:
        return values_equal(rule, a, b, spec.validation)
    except (ValueError, TypeError, ArithmeticError, DiffError):
        # a value the rule cannot read (text in an integer column of SQLite): not equal, save a MariaDB
        # zero date ('0000-00-00', as PyMySQL hands it over) that came back the same
        return isinstance(a, str) and a == b and a.startswith("0000-00-00")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
