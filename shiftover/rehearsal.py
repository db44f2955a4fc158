"""The rehearsal: a sample of source rows pushed through the real mapping, transform and writer
into the target inside a transaction that is rolled back, then read back and compared.

``check`` and the first step of every run (before dual-write is switched on) call it, so the
problems a run would otherwise meet after rows are copied are all reported at once, each naming
its spec field: NULL keys, a transform that raises or drops a column, a write the target refuses
(a type, a length, NOT NULL), a value that comes back truncated, rounded or re-formatted, an
unmapped NOT NULL column, names past the engine's identifier limit, rows already under source keys.

What is exercised is the backfill's rows path (``select_source``, ``transform_rows``,
``row_converter``, the target engine's insert-if-absent writer, on a borrowed session that never
commits) for every sampled row. A PostgreSQL target fed from PostgreSQL or MariaDB without a
transform is copied by streamed COPY data in a real run: there the first key range goes that way
first (``backfill.sources``), so what is read back for it is what the stream wrote. Before the target exists
(``backfill.create_target``) rows go into a TEMPORARY table built from the DDL the run would
create. Only DML runs inside the transaction (MariaDB commits any DDL but a temporary table's).

Read back, values are compared by ``diff.equality.values_equal``, with one difference: decimals
compare by value, not at the larger declared scale, since a value the target rounded to its
scale is exactly what the rehearsal is for.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.copy import transform_rows
from shiftover.backfill.keyset import Key, KeyRange, count_null_keys, key_columns
from shiftover.backfill.session import BorrowedConnection
from shiftover.backfill.sources import stream_for
from shiftover.backfill.typemap import row_converter, target_table_for, uncreatable_columns
from shiftover.decommission import archive_table
from shiftover.diff.equality import comparable, compare_select, read_apart
from shiftover.diff.normalize import NATIVE, ColumnRule, native_refused
from shiftover.diff.rows import key_token
from shiftover.diff.rules import same_declared_type
from shiftover.engines import dialect_for
from shiftover.errors import RehearsalError, describe_error
from shiftover.mapping import TableMapping
from shiftover.rehearsal_sample import Sample, column_rules, source_sample
from shiftover.rehearsal_verdicts import (
    Finding,
    error_text,
    field_of,
    judge_existing,
    judge_refusals,
    judge_values,
    named_columns,
)
from shiftover.rowsync import key_in
from shiftover.spec import MigrationSpec

Row = tuple[Any, ...]
SAMPLE_ROWS = 1_000
RETRY_BATCH = 32  # after a refused write: batches this size, then the refused batches row by row


@dataclass(frozen=True)
class RehearsalReport:
    findings: tuple[Finding, ...]
    rows: int  # source rows rehearsed
    seconds: float
    notes: tuple[str, ...] = ()  # what was checked differently, and why

    @property
    def ok(self) -> bool:
        return not self.findings

    def require(self) -> RehearsalReport:
        """This report, or ``RehearsalError`` with every finding when there is any."""
        if self.findings:
            raise RehearsalError(self.findings)
        return self


def rehearse(
    spec: MigrationSpec,
    mapping: TableMapping,
    source: Engine,
    target: Engine,
    *,
    sample_rows: int = SAMPLE_ROWS,
    restarted: bool = False,
) -> RehearsalReport:
    """Rehearse the copy of a bounded sample; nothing is written (the target's transaction is rolled back).

    ``restarted``: the migration starts again after a rollback, so rows in the target are its own
    earlier copy (kept and topped up), not rows ``on_existing`` is about.
    """
    started = time.monotonic()
    run = _Rehearsal(spec, mapping, source, target, restarted)
    run.check_names()
    run.check_null_keys()
    run.prepare_target()
    if run.blocked:
        return RehearsalReport(tuple(run.findings), 0, time.monotonic() - started, tuple(run.notes))
    sample = source_sample(source, run.src, mapping, sample_rows)
    run.rehearse_rows(sample)
    return RehearsalReport(tuple(run.findings), len(sample.keys), time.monotonic() - started, tuple(run.notes))


@dataclass
class _Rehearsal:
    spec: MigrationSpec
    mapping: TableMapping
    source: Engine
    target: Engine
    restarted: bool = False
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.src = self.mapping.source_table_obj(self.source)
        self.write_mapping = self.mapping
        self.temp: sa.Table | None = None
        self.real: sa.Table | None = None  # the target table when it exists (where rows may already be)
        self.unmapped_not_null: set[str] = set()
        self.blocked = False  # the target cannot even be planned: no rows are rehearsed
        self.located: dict[str, list[str]] = {}  # error text -> the column found refusing it

    def add(self, field_name: str, problem: str) -> None:
        self.findings.append(Finding(field_name, problem))

    # -- before any row ------------------------------------------------------------------
    def check_names(self) -> None:
        """Names the engines would cut: the archive's (old table + suffix), the new table's, its columns'."""
        archive = archive_table(self.spec)
        self._check_name(self.source, archive, "archive.suffix", f"the archive table name {archive!r}")
        self._check_name(
            self.target, self.spec.target.table, "target.table", f"the table name {self.spec.target.table!r}"
        )
        for col in self.mapping.columns:
            self._check_name(self.target, col.target, field_of(self.spec, col.target), f"column name {col.target!r}")

    def _check_name(self, engine: Engine, name: str, field_name: str, what: str) -> None:
        dialect = dialect_for(engine)
        length = dialect.identifier_length(name)
        if dialect.max_identifier is not None and length > dialect.max_identifier:
            self.add(
                field_name,
                f"{what} is {length} long; {dialect.name} keeps {dialect.max_identifier} "
                "(a longer name is cut, so a later step would not find it): shorten it",
            )

    def check_null_keys(self) -> None:
        nulls = count_null_keys(self.source, self.src, self.mapping.key)
        if nulls:
            self.add(
                "key",
                f"{nulls} source row(s) have NULL in key column(s) {list(self.mapping.key)}: they cannot be "
                "copied or compared by key; fill them, or declare a key without NULLs",
            )

    def prepare_target(self) -> None:
        """The target table to rehearse into: the real one, or a TEMPORARY one (the planned DDL before the
        target exists; the target's mapped columns when an unmapped NOT NULL column would refuse every row)."""
        m = self.mapping
        inspector = sa.inspect(self.target)
        if not inspector.has_table(m.target_table, schema=m.target_schema):
            for column, why in uncreatable_columns(self.source, self.target, m).items():
                self.blocked = True
                self.add(
                    field_of(self.spec, column),
                    f"column {column!r}: its source type {why} has no {dialect_for(self.target).name} type to "
                    "create it as: convert it in the mapping (columns[].sql, e.g. to text or JSON) or create the "
                    "target table yourself",
                )
            if self.blocked:
                return
            self._use_temporary(target_table_for(self.source, dialect_for(self.target), m).columns)
            self.notes.append(
                f"{m.target_table} does not exist yet: rehearsed into a temporary table of the planned DDL"
            )
            return
        self.real = self.tgt = m.target_table_obj(self.target)
        named = dialect_for(self.target).reflected_name
        self._check_unmapped(
            [{**c, "name": named(c["name"])} for c in inspector.get_columns(m.target_table, schema=m.target_schema)]
        )
        if self.unmapped_not_null:
            key = set(m.target_key)
            self._use_temporary(
                sa.Column(c.name, c.type, primary_key=c.name in key, nullable=c.nullable, autoincrement=False)
                for c in self.tgt.columns
                if c.name in m.target_columns
            )
            self.notes.append("rows rehearsed into a temporary table of the target's mapped columns (types kept)")

    def _use_temporary(self, columns: Any) -> None:
        name = f"so_rehearsal_{uuid.uuid4().hex[:10]}"
        self.temp = self.tgt = sa.Table(name, sa.MetaData(), *(c._copy() for c in columns), prefixes=["TEMPORARY"])
        self.write_mapping = dataclasses.replace(self.mapping, target_table=name, target_schema=None)

    def _check_unmapped(self, columns: Sequence[Any]) -> None:
        mapped = set(self.mapping.target_columns)
        for c in columns:
            generated = c.get("default") is not None or c.get("autoincrement") is True or c.get("computed")
            if c["name"] not in mapped and not c["nullable"] and not generated and not c.get("identity"):
                self.unmapped_not_null.add(c["name"])
                self.add(
                    "columns",
                    f"target column {c['name']!r} is NOT NULL without a default and no spec column maps to it: "
                    "every insert would fail; map a source column to it (columns[].target) or give it a default",
                )

    # -- the rows --------------------------------------------------------------------------
    def rehearse_rows(self, sample: Sample) -> None:
        keys = sample.keys
        if not keys:
            self.notes.append("the source table is empty: no rows to rehearse")
        rules, unusable = column_rules(self.mapping, self.src, self.tgt, self.spec.validation)
        for target_col, error in unusable.items():
            self.add(field_of(self.spec, target_col), str(error))
        for target_col in [t for t, r in rules.items() if r.kind == NATIVE and not self._same_native(t)]:
            rules.pop(target_col)
            self.add(field_of(self.spec, target_col), str(native_refused(target_col)))
        # one read (one snapshot under live writes): the values as the backfill reads them, and beside
        # them the columns the compare reads apart (JSON as text, floats as doubles)
        apart = [] if self.mapping.transform else self._read_apart(rules)
        width = len(self.mapping.columns)
        query = self.mapping.select_source(self.src).add_columns(*(expr for _, expr in apart))
        read = self._read(query, keys)
        if read is None:
            return
        rows = self._transform([r[:width] for r in read])
        expected = rows if self.mapping.transform else [self._as_compared(r, apart, width) for r in read]
        convert = row_converter(self.mapping, self.src, self.tgt, self.target.dialect)
        written = convert(rows) if convert else list(rows)
        self._write_and_compare(written, expected, rules, sample.first_range)

    def _same_native(self, target_col: str) -> bool:
        """The diff compares an array, interval or bit column by the engine's own text: same engine, same type."""
        col = next(c for c in self.mapping.columns if c.target == target_col)
        return same_declared_type(col, self.src, self.tgt, self.source, self.target)

    def _read_apart(self, rules: dict[str, ColumnRule]) -> list[tuple[int, sa.ColumnElement[Any]]]:
        """(position, expression) of each column the compare reads otherwise than the copy does."""
        out = []
        for i, col in enumerate(self.mapping.columns):
            rule = rules.get(col.target)
            if rule is not None and read_apart(rule):
                raw = self.src.c[col.source] if col.sql is None else sa.literal_column(f"({col.sql})")
                out.append((i, comparable(raw, rule, f"so_compared_{i}")))
        return out

    @staticmethod
    def _as_compared(row: Row, apart: list[tuple[int, Any]], width: int) -> Row:
        values = list(row[:width])
        for j, (i, _) in enumerate(apart):
            values[i] = row[width + j]
        return tuple(values)

    def _read(self, query: sa.Select[Any], keys: Sequence[Key]) -> list[Row] | None:
        out: list[Row] = []
        try:
            with self.source.connect() as conn, dialect_for(self.source).utc_session(conn):
                for i in range(0, len(keys), 500):
                    batch = keys[i : i + 500]
                    out.extend(tuple(r) for r in conn.execute(query.where(key_in(self.src, self.mapping.key, batch))))
        except sa.exc.DBAPIError as exc:
            self.add("columns", f"reading the mapped columns from the source failed: {describe_error(exc.orig or exc)}")
            return None
        return out

    def _key(self, row: Row) -> Key:
        cols = self.mapping.target_columns
        return tuple(row[cols.index(k)] for k in self.mapping.target_key)

    def _transform(self, rows: list[Row]) -> list[Row]:
        """The backfill's transform over the sample; on failure, row by row to name the rows it fails on."""
        if self.mapping.transform is None or not rows:
            return rows
        try:
            return transform_rows(self.mapping, rows)
        except Exception:
            pass
        dropped = self._dropped_columns(rows)
        if dropped:
            self.add(
                "transform",
                f"{self.spec.transform} returns no column(s) {dropped} of the mapping: return every mapped column",
            )
            return []
        good: list[Row] = []
        failed: list[tuple[Row, BaseException]] = []
        for row in rows:
            try:
                good.extend(transform_rows(self.mapping, [row]))
            except Exception as exc:
                failed.append((row, exc))
        first_row, first_error = failed[0]
        self.add(
            "transform",
            f"{self.spec.transform} raised {describe_error(first_error)} on {len(failed)} of {len(rows)} rehearsed "
            f"row(s), first on key {self._key(first_row)}",
        )
        return good

    def _dropped_columns(self, rows: list[Row]) -> list[str]:
        import pandas as pd

        assert self.mapping.transform is not None
        try:
            out = self.mapping.transform(pd.DataFrame.from_records(rows, columns=list(self.mapping.target_columns)))
        except Exception:
            return []
        return [c for c in self.mapping.target_columns if c not in out.columns]

    def _write_and_compare(
        self, written: list[Row], expected: list[Row], rules: dict[str, ColumnRule], first_range: KeyRange
    ) -> None:
        with self.target.connect() as conn:
            try:
                dialect_for(conn).begin_undoable(conn)
                if self.temp is not None:
                    self.temp.create(conn)
                keys = [self._key(r) for r in written]
                has_rows, existing = self._existing(conn, keys)
                to_write = [r for r, k in zip(written, keys, strict=True) if k not in existing]
                failures, streamed = self._write(conn, to_write, first_range)
                failed = {self._key(r) for r, _ in failures}  # written with NULLs for discovery: not compared
                back = self._read_back(conn, [k for k in keys if k not in existing and k not in failed], rules)
            finally:
                conn.rollback()
                conn.invalidate()  # session settings of the writer (time zone, strict mode) go with it
        found, notes = judge_existing(self.spec, has_rows, existing, len(keys), restarted=self.restarted)
        self.findings += found
        self.notes += notes
        refusals = judge_refusals(self.spec, self.mapping, failures, len(to_write), self._key)
        self.findings += refusals
        if streamed is not None and not any(f.field == streamed.field for f in refusals):
            self.findings.append(streamed)  # refused as COPY data only: the rows path took the same values
        token = self._token_of(rules)
        skip = {token(k) for k in existing | failed}
        by_token = {token(self._key(r)): r for r in back}
        compared = [r for r in expected if token(self._key(r)) not in skip]
        self.findings += judge_values(
            self.spec, self.mapping, compared, by_token, rules, lambda r: token(self._key(r)), self._key
        )

    def _token_of(self, rules: dict[str, ColumnRule]) -> Callable[[Key], Any]:
        """A key's identity on both sides (``diff.rows.key_token``; its values' reprs without key rules)."""
        key_rules = [rules.get(k) for k in self.mapping.target_key]
        complete = [r for r in key_rules if r is not None]
        if len(complete) < len(key_rules):
            return lambda key: tuple(repr(v) for v in key)
        return lambda key: key_token(complete, key)

    def _existing(self, conn: sa.Connection, keys: list[Key]) -> tuple[bool, set[Key]]:
        """Whether the target holds any row, and which of ``keys`` it holds."""
        if self.real is None:
            return False, set()
        if conn.execute(sa.select(sa.literal(1)).select_from(self.real).limit(1)).first() is None:
            return False, set()
        cols = key_columns(self.real, self.mapping.target_key)
        found: set[Key] = set()
        for i in range(0, len(keys), 500):
            query = sa.select(*cols).where(key_in(self.real, self.mapping.target_key, keys[i : i + 500]))
            found |= {tuple(r) for r in conn.execute(query)}
        return True, {k for k in keys if k in found}

    def _write(
        self, conn: sa.Connection, rows: list[Row], first_range: KeyRange
    ) -> tuple[list[tuple[Row, BaseException]], Finding | None]:
        """Write through the engine's backfill writer in savepoints (refused rows are looked at one by
        one), after the first key range as COPY data where a run streams it; returns the refusals."""
        if not rows:
            return [], None
        writer = dialect_for(self.target).bulk_writer(
            self.target, self.write_mapping, self.tgt, BorrowedConnection(conn)
        )
        try:
            streamed = self._stream(conn, writer, first_range)
            return self._write_batches(conn, writer, rows), streamed
        finally:
            writer.close()

    def _stream(self, conn: sa.Connection, writer: Any, chunk: KeyRange) -> Finding | None:
        """The first key range copied as a run copies into PostgreSQL from PostgreSQL or MariaDB without
        a transform: COPY data from the source, never decoded in Python; the refusal, if any."""
        stream_class = stream_for(self.source, self.target, self.mapping)
        if stream_class is None or chunk.hi is None:
            return None
        stream = None
        try:
            with conn.begin_nested():
                stream = stream_class(self.source, self.mapping, writer)
                stream.copy_chunk(writer, chunk)
            return None
        except Exception as exc:  # the driver's own error
            named = named_columns(error_text(exc), list(self.mapping.target_columns))
            return Finding(
                field_of(self.spec, named[0]) if named else "target.table",
                f"the COPY stream a run uses refused {chunk.describe()}: {error_text(exc).splitlines()[0]}",
            )
        finally:
            if stream is not None:
                stream.close()

    def _write_batches(self, conn: sa.Connection, writer: Any, rows: list[Row]) -> list[tuple[Row, BaseException]]:
        """All rows at once; if refused, in batches of ``RETRY_BATCH``, and a refused batch row by row."""
        if self._written(conn, writer, rows):
            return []
        failures: list[tuple[Row, BaseException]] = []
        for i in range(0, len(rows), RETRY_BATCH):
            batch = rows[i : i + RETRY_BATCH]
            if len(rows) <= RETRY_BATCH or not self._written(conn, writer, batch):
                failures += [(row, exc) for row in batch for exc in self._write_row(conn, writer, row)]
        return failures

    def _written(self, conn: sa.Connection, writer: Any, rows: list[Row]) -> bool:
        try:
            with conn.begin_nested():
                writer.write_rows(rows, KeyRange(None, None))
            return True
        except Exception:
            return False

    def _write_row(self, conn: sa.Connection, writer: Any, row: Row) -> list[BaseException]:
        """Every refusal of one row: after each, the column it names is written as NULL and the row
        tried again, so a second bad column of the same row is not hidden behind the first."""
        cols = list(self.mapping.target_columns)
        values, blanked = list(row), set(self.mapping.target_key)
        errors: list[BaseException] = []
        for _ in cols:
            try:
                with conn.begin_nested():
                    writer.write_rows([tuple(values)], KeyRange(None, None))
                return errors
            except Exception as exc:  # the driver's own error: each engine raises its own family
                named = named_columns(error_text(exc), cols)
                if named and named[0] in blanked:
                    return errors  # the NULL put in for discovery was refused, not the row's own value
                if not named:  # the error names no column (a driver's "nan can not be used"): find it
                    text = error_text(exc)
                    known = [c for c in self.located.get(text, []) if c not in blanked]
                    named = self._refused_column(conn, writer, values, blanked, known) if known else []
                    if not named:  # the column this error text was found on before (one write), else each
                        named = self._refused_column(conn, writer, values, blanked)
                    self.located[text] = named
                    if named:
                        exc.so_column = named[0]  # type: ignore[attr-defined]
                errors.append(exc)
                if not named:
                    return errors
                values[cols.index(named[0])] = None
                blanked.add(named[0])
        return errors

    def _refused_column(
        self, conn: sa.Connection, writer: Any, values: list[Any], blanked: set[str], only: list[str] | None = None
    ) -> list[str]:
        """The one column (of ``only``, or any) whose value, written as NULL instead, lets the row in; [] when
        none does."""
        cols = list(self.mapping.target_columns)
        for i, col in enumerate(cols):
            if col in blanked or values[i] is None or (only is not None and col not in only):
                continue
            trial = [None if j == i else v for j, v in enumerate(values)]
            try:
                with conn.begin_nested():
                    writer.write_rows([tuple(trial)], KeyRange(None, None))
                return [col]
            except Exception:
                continue
        return []

    def _read_back(self, conn: sa.Connection, keys: list[Key], rules: dict[str, ColumnRule]) -> list[Row]:
        """The written rows as the compare reads them; a column whose values the target's type cannot
        read back (SQLite text in a DATE column) is a finding, and is left out of the compare."""
        try:
            return self._select_back(conn, keys, rules, set())
        except (ValueError, TypeError, ArithmeticError):
            pass  # a result processor refused a value: find the column
        unreadable: set[str] = set()
        for col in self.mapping.target_columns:
            try:
                self._select_back(conn, keys, rules, set(self.mapping.target_columns) - {col})
            except (ValueError, TypeError, ArithmeticError) as exc:
                unreadable.add(col)
                rules.pop(col, None)
                self.add(
                    field_of(self.spec, col),
                    f"column {col!r}: the rehearsed values cannot be read back as the target's type "
                    f"({describe_error(exc)}): convert them in the mapping, or change the target column's type",
                )
        return self._select_back(conn, keys, rules, unreadable)

    def _select_back(
        self, conn: sa.Connection, keys: list[Key], rules: dict[str, ColumnRule], skip: set[str]
    ) -> list[Row]:
        query = compare_select(self.tgt, self.mapping, list(rules.values()), is_source=False)
        if skip:
            cols = [sa.null().label(c) if c in skip else query.selected_columns[c] for c in self.mapping.target_columns]
            query = sa.select(*cols)
        out: list[Row] = []
        for i in range(0, len(keys), 500):
            where = key_in(self.tgt, self.mapping.target_key, keys[i : i + 500])
            out.extend(tuple(r) for r in conn.execute(query.where(where)))
        return out
