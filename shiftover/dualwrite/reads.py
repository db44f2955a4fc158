"""Reads routed by percentage, and shadowed (Scientist-style) when the shadow flag is on.

The primary read's answer is returned in the application's shape (old column names); the
shadow side's errors are counted, never raised. Both sides are compared in the target's
shape (the old row passed through the mapping, the new row as stored) by the diff's column
rules, with JSON and float columns also read as the compare needs them (``equality.read_apart``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover import metrics
from shiftover.diff.equality import comparable, compare_rules, compare_select, read_apart
from shiftover.diff.normalize import ColumnRule
from shiftover.dualwrite.shadow import compare_rows
from shiftover.flags.routing import Routing
from shiftover.mapping import TableMapping
from shiftover.metrics import Recorder
from shiftover.rowsync import Key, key_in
from shiftover.spec import ValidationSpec

log = logging.getLogger(__name__)
Image = dict[str, Any] | None


class RoutedReader:
    def __init__(
        self,
        old: Engine,
        new: Engine,
        mapping: TableMapping,
        recorder: Recorder,
        *,
        shadow_sample: float = 1.0,
        options: ValidationSpec | None = None,
    ) -> None:
        self.old, self.new, self.mapping, self.recorder = old, new, mapping, recorder
        self.shadow_sample = shadow_sample
        self.options = options or ValidationSpec()
        self._to_old = {c.target: c.source for c in mapping.columns if c.sql is None}
        self._renames_only = mapping.transform is None and all(c.sql is None for c in mapping.columns)
        self._rules: list[ColumnRule] | None = None
        self._rng = random.Random()

    def read(self, key: Key, routing: Routing, attributes: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        from_new = routing.reads_new(key, attributes)
        shadowed = routing.shadow and (self.shadow_sample >= 1 or self._rng.random() < self.shadow_sample)
        rules = self._compare_rules() if shadowed else None
        if rules is None:
            return self._app_shape_new(self.read_new(key)) if from_new else self.read_old(key)
        if from_new:
            new_row, apart = self._read(self.new, self._new_table(), self.mapping.target_key, key, rules, new=True)
            new_image = None if new_row is None else new_row | apart
            self._experiment(key, rules, lambda: new_image, lambda: self.old_image(key, rules), new_is_control=True)
            return self._app_shape_new(new_row)
        old_row, apart = self._read(self.old, self._old_table(), self.mapping.key, key, rules, new=False)
        self._experiment(
            key, rules, lambda: self._old_image_from(key, rules, old_row, apart), lambda: self.new_image(key, rules)
        )
        return old_row

    def _experiment(
        self,
        key: Key,
        rules: list[ColumnRule],
        control_fn: Callable[[], Image],
        candidate_fn: Callable[[], Image],
        *,
        new_is_control: bool = False,
    ) -> None:
        """Run the other side, compare, record; never raises."""
        started = time.perf_counter()
        try:
            control = control_fn()
            candidate = candidate_fn()
        except Exception:
            self.recorder.count(metrics.SHADOW_ERRORS)
            return
        self.recorder.count(metrics.SHADOW_NEW_MS, (time.perf_counter() - started) * 1000)
        self.recorder.count(metrics.SHADOW_READS)
        old_image, new_image = (candidate, control) if new_is_control else (control, candidate)
        differing = compare_rows(rules, old_image, new_image, self.options)
        if differing:
            self.recorder.mismatch(key, differing, old_image, new_image)

    def _compare_rules(self) -> list[ColumnRule] | None:
        """The diff's rules for this mapping (reflected once); None, counted as a shadow error, if unreachable."""
        if self._rules is None:
            try:
                src, tgt = self._old_table(), self._new_table()
                self._rules = compare_rules(self.mapping, src, tgt, self.options, strict=False)
            except Exception as exc:
                log.warning("shadow read skipped: cannot reflect the tables to compare (%s)", exc)
                self.recorder.count(metrics.SHADOW_ERRORS)
                return None
        return self._rules

    # -- the two sides ------------------------------------------------------------
    def read_old(self, key: Key) -> dict[str, Any] | None:
        return self._read(self.old, self._old_table(), self.mapping.key, key, [], new=False)[0]

    def read_new(self, key: Key) -> dict[str, Any] | None:
        """The new row's mapped columns, under target names."""
        return self._read(self.new, self._new_table(), self.mapping.target_key, key, [], new=True)[0]

    def _read(
        self,
        engine: Engine,
        table: sa.Table,
        key_names: tuple[str, ...],
        key: Key,
        rules: list[ColumnRule],
        *,
        new: bool,
    ) -> tuple[Image, dict[str, Any]]:
        """The row as the application reads it and, in the same query, the columns the compare reads apart."""
        cols = [table.c[c] for c in self.mapping.target_columns] if new else list(table.c)
        by_target = {c.target: c for c in self.mapping.columns}
        apart = {
            r.target: comparable(table.c[r.target if new else by_target[r.target].source], r, r.target)
            for r in rules
            if read_apart(r) and (new or by_target[r.target].sql is None)
        }
        query = sa.select(*cols, *apart.values())
        with engine.connect() as conn:
            row = conn.execute(query.where(key_in(table, key_names, [key]))).first()
        if row is None:
            return None, {}
        n = len(cols)
        return {c.name: v for c, v in zip(cols, row[:n], strict=True)}, dict(zip(apart, row[n:], strict=True))

    def _old_image_from(self, key: Key, rules: list[ColumnRule], old_row: Image, apart: dict[str, Any]) -> Image:
        """The old row as the target should hold it, from the row already read when renames are all."""
        if old_row is None:
            return None
        if not self._renames_only:
            return self.old_image(key, rules)
        return {c.target: old_row[c.source] for c in self.mapping.columns} | apart

    def old_image(self, key: Key, rules: list[ColumnRule]) -> Image:
        """The old row as the target should hold it (renames applied, SQL and transforms evaluated)."""
        table = self._old_table()
        query = compare_select(table, self.mapping, rules, is_source=True).where(key_in(table, self.mapping.key, [key]))
        with self.old.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        rows = self.mapping.transform_records(rows)
        return rows[0] if rows else None

    def new_image(self, key: Key, rules: list[ColumnRule]) -> Image:
        """The new row as the compare reads it (JSON as text)."""
        table = self._new_table()
        where = key_in(table, self.mapping.target_key, [key])
        with self.new.connect() as conn:
            row = conn.execute(compare_select(table, self.mapping, rules, is_source=False).where(where)).first()
        return dict(row._mapping) if row is not None else None

    def _old_table(self) -> sa.Table:
        return self.mapping.source_table_obj(self.old)

    def _new_table(self) -> sa.Table:
        return self.mapping.target_table_obj(self.new)

    def _app_shape_new(self, new_row: Image) -> Image:
        if new_row is None:
            return None
        return {self._to_old.get(c, c): v for c, v in new_row.items()}
