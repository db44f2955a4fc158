"""Reads routed by percentage, and shadowed (Scientist-style) when the shadow flag is on.

The primary read's answer is returned in the application's shape (old column names); the
shadow side's errors are counted, never raised. Both sides are compared in the target's
shape: the old row passed through the mapping, the new row as stored.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover import metrics
from shiftover.dualwrite.shadow import compare_rows
from shiftover.flags.routing import Routing
from shiftover.mapping import TableMapping
from shiftover.metrics import Recorder
from shiftover.rowsync import Key, fetch_rows, key_in


class RoutedReader:
    def __init__(
        self, old: Engine, new: Engine, mapping: TableMapping, recorder: Recorder, *, shadow_sample: float = 1.0
    ) -> None:
        self.old, self.new, self.mapping, self.recorder = old, new, mapping, recorder
        self.shadow_sample = shadow_sample
        self._to_old = {c.target: c.source for c in mapping.columns if c.sql is None}
        self._renames_only = mapping.transform is None and all(c.sql is None for c in mapping.columns)
        self._rng = random.Random()

    def read(self, key: Key, routing: Routing, attributes: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        from_new = routing.reads_new(key, attributes)
        shadowed = routing.shadow and (self.shadow_sample >= 1 or self._rng.random() < self.shadow_sample)
        if not shadowed:
            return self._app_shape_new(self.read_new(key)) if from_new else self.read_old(key)
        if from_new:
            new_row = self.read_new(key)
            self._experiment(key, new_row, lambda: self._old_image_of(key), new_is_control=True)
            return self._app_shape_new(new_row)
        old_row = self.read_old(key)
        self._experiment(key, self.old_image(key, old_row), lambda: self.read_new(key), new_is_control=False)
        return old_row

    def _experiment(
        self,
        key: Key,
        control: dict[str, Any] | None,
        candidate_fn: Callable[[], dict[str, Any] | None],
        *,
        new_is_control: bool,
    ) -> None:
        """Run the other side, compare, record; never raises."""
        started = time.perf_counter()
        try:
            candidate = candidate_fn()
        except Exception:
            self.recorder.count(metrics.SHADOW_ERRORS)
            return
        self.recorder.count(metrics.SHADOW_NEW_MS, (time.perf_counter() - started) * 1000)
        self.recorder.count(metrics.SHADOW_READS)
        old_image, new_row = (candidate, control) if new_is_control else (control, candidate)
        differing = compare_rows(old_image, new_row)
        if differing:
            self.recorder.mismatch(key, differing, old_image, new_row)

    # -- the two sides ------------------------------------------------------------
    def read_old(self, key: Key) -> dict[str, Any] | None:
        table = self.mapping.source_table_obj(self.old)
        with self.old.connect() as conn:
            row = conn.execute(sa.select(table).where(key_in(table, self.mapping.key, [key]))).first()
        return dict(row._mapping) if row is not None else None

    def read_new(self, key: Key) -> dict[str, Any] | None:
        """The new row's mapped columns, under target names."""
        table = self.mapping.target_table_obj(self.new)
        cols = [table.c[c] for c in self.mapping.target_columns]
        with self.new.connect() as conn:
            row = conn.execute(sa.select(*cols).where(key_in(table, self.mapping.target_key, [key]))).first()
        return dict(row._mapping) if row is not None else None

    def old_image(self, key: Key, old_row: dict[str, Any] | None) -> dict[str, Any] | None:
        """The old row as the target should hold it (renames applied, SQL and transforms evaluated)."""
        if old_row is None:
            return None
        if self._renames_only:
            return {c.target: old_row[c.source] for c in self.mapping.columns}
        return self._mapped_image(key)

    def _old_image_of(self, key: Key) -> dict[str, Any] | None:
        """``old_image`` of a key not read yet: one read of the old store either way."""
        return self.old_image(key, self.read_old(key)) if self._renames_only else self._mapped_image(key)

    def _mapped_image(self, key: Key) -> dict[str, Any] | None:
        rows = fetch_rows(self.old, self.mapping, [key])  # SQL columns and the transform applied
        return rows[0] if rows else None

    def _app_shape_new(self, new_row: dict[str, Any] | None) -> dict[str, Any] | None:
        if new_row is None:
            return None
        return {self._to_old.get(c, c): v for c, v in new_row.items()}
