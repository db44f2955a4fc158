"""Reads of a row during an expand/contract change, from the old columns or the new, by the reads flag.

An application that reads through ``ColumnReads`` lets Shiftover move its reads a share at a time:
the flag ``<name>:schema.reads`` says ``{"columns": "new"}`` (every key reads the new columns),
``{"columns": "new", "percent": p}`` (the keys in a ``p`` % rollout, bucketed by row key with
``flags.bucketing``, so a key never goes back to the old columns as ``p`` rises) or anything else
(old columns). A read is one SELECT; the row comes back under the columns of the side it was served
from, so the application sees one shape per key and never both.

Shadow reads are opt-in by the flag (``"shadow": true`` in its value), not implied by both sides
existing: the plan's default flip (``{"columns": "new"}``) stays a plain read. While shadowing, the
same SELECT also reads both sides and ``up(old)`` for every new column, computed by the database from
the spec's own SQL (cast to the new column's type where the engine can), and the stored new values
are compared with it exactly. A difference is recorded as a shadow mismatch (key, the differing new
columns, ``up(old)`` as the old value, the stored one as the new) by the table move's ``Recorder``;
a comparison that cannot run (an ``up`` failing on the row, say) is counted as a shadow error and
the row is read again without it. The shadow side never raises into the application.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover import metrics
from shiftover.flags.bucketing import in_rollout
from shiftover.flags.client import FlagClient
from shiftover.metrics import Recorder
from shiftover.schema.engines import schema_dialect
from shiftover.schema.plan import flag_key
from shiftover.schema.spec import ColumnMove, ExpandContractSpec

log = logging.getLogger(__name__)
Row = dict[str, Any]


@dataclass(frozen=True)
class ReadsFlag:
    """The reads flag's value as a rollout: the share of keys reading new columns, and shadowing."""

    percent: float
    shadow: bool

    @classmethod
    def from_value(cls, value: Any) -> ReadsFlag:
        """Anything but ``{"columns": "new", ...}`` reads the old columns; a malformed ``percent``
        reads the old columns too (the safe side), logged, never raised into a read."""
        if not isinstance(value, Mapping):
            return cls(0.0, False)
        shadow = value.get("shadow") is True
        if value.get("columns") != "new":
            return cls(0.0, shadow)
        percent = value.get("percent", 100)
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
            log.warning("reads flag percent %r is no number in [0, 100]: reading the old columns", percent)
            return cls(0.0, shadow)
        return cls(float(percent), shadow)


class ColumnReads:
    """Reads rows of the spec's table for an application during the change. Thread-safe (the flag
    client and recorder are; nothing here is mutable after construction).

    ``columns`` are other columns the application reads (returned as they are, whatever the side);
    ``recorder`` receives shadow reads, mismatches and errors (``metrics.Recorder(store, spec.name)``,
    flushed by the application as the table move's dual-writer does); without one nothing is shadowed.
    """

    def __init__(
        self,
        flags: FlagClient,
        spec: ExpandContractSpec,
        engine: Engine,
        recorder: Recorder | None = None,
        *,
        columns: Sequence[str] = (),
    ) -> None:
        self.flags, self.engine, self.recorder = flags, engine, recorder
        self.flag = flag_key(spec.name, "reads")
        self.key = tuple(spec.key)
        self.moves: tuple[ColumnMove, ...] = spec.moves
        self.old_columns, self.new_columns = spec.moved_old_columns, spec.moved_new_columns
        self.columns = tuple(columns)
        self._dialect = schema_dialect(engine)
        quote = engine.dialect.identifier_preparer.quote
        schema = spec.database.schema_name
        self._table = f"{quote(schema)}.{quote(spec.database.table)}" if schema else quote(spec.database.table)
        self._where = " AND ".join(f"{quote(k)} = :k{i}" for i, k in enumerate(self.key))
        self._quote = quote

    def rollout(self) -> ReadsFlag:
        return ReadsFlag.from_value(self.flags.get(self.flag))

    def reads_new(self, key: Any, rollout: ReadsFlag | None = None) -> bool:
        """Whether ``key`` reads the new columns now (monotone in the flag's percent)."""
        rollout = rollout or self.rollout()
        return in_rollout(self.flag, _as_key(key), rollout.percent)

    def read(self, key: Any) -> Row | None:
        """The row of ``key`` (a value, or a tuple for a composite key) with the key, ``columns`` and
        the served side's columns under their own names; None when there is no such row."""
        key = _as_key(key)
        rollout = self.rollout()
        from_new = self.reads_new(key, rollout)
        served = self.new_columns if from_new else self.old_columns
        if rollout.shadow and self.recorder is not None:
            try:
                found = self._select(key, self.old_columns + self.new_columns, self._ups())
            except Exception as exc:  # the shadow expressions failed: serve the plain read
                log.warning("shadow read of %s skipped: %s", key, exc)
                self.recorder.count(metrics.SHADOW_ERRORS)
            else:
                if found is None:
                    return None
                row, ups = found
                self._compare(key, row, ups)
                return self._shape(row, served)
        found = self._select(key, served, [])
        return None if found is None else self._shape(found[0], served)

    # -- internals ------------------------------------------------------------------------------
    def _ups(self) -> list[str]:
        """``up(old)`` of every new column, as the database computes it over the row read."""
        return [self._dialect.typed(f"({n.up})", n.type) for m in self.moves for n in m.news]

    def _select(self, key: tuple[Any, ...], side: Sequence[str], extra: Sequence[str]) -> tuple[Row, list[Any]] | None:
        names = list(dict.fromkeys(self.key + self.columns + tuple(side)))
        exprs = [self._quote(n) for n in names] + [f"{e} AS so_up_{i}" for i, e in enumerate(extra)]
        sql = f"SELECT {', '.join(exprs)} FROM {self._table} WHERE {self._where}"
        with self.engine.connect() as conn:
            found = conn.execute(sa.text(sql), {f"k{i}": v for i, v in enumerate(key)}).first()
        if found is None:
            return None
        return dict(zip(names, found[: len(names)], strict=True)), list(found[len(names) :])

    def _compare(self, key: tuple[Any, ...], row: Row, ups: list[Any]) -> None:
        """Stored new values against ``up(old)``, exactly; records, never raises."""
        assert self.recorder is not None
        try:
            expected = dict(zip(self.new_columns, ups, strict=True))
            differing = [c for c in self.new_columns if not _same(row[c], expected[c])]
            self.recorder.count(metrics.SHADOW_READS)
            if differing:
                self.recorder.mismatch(key, differing, expected, {c: row[c] for c in self.new_columns})
        except Exception as exc:
            log.warning("shadow comparison of %s failed: %s", key, exc)
            self.recorder.count(metrics.SHADOW_ERRORS)

    def _shape(self, row: Row, served: Sequence[str]) -> Row:
        keep = set(self.key) | set(self.columns) | set(served)
        return {c: v for c, v in row.items() if c in keep}


def _as_key(key: Any) -> tuple[Any, ...]:
    return tuple(key) if isinstance(key, tuple | list) else (key,)


def _same(stored: Any, expected: Any) -> bool:
    """Equal values, NULL equal to NULL; numbers compared by exact value (1234 == Decimal("1234.00")),
    but a number never equal to text."""
    if stored is None or expected is None:
        return stored is None and expected is None
    if isinstance(stored, str) != isinstance(expected, str):
        return False
    return bool(stored == expected)
