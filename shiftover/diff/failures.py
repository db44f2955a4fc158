"""The diff's footprint in the control store: segment progress (so_diff_segments) and the
differing keys (so_validation_failures), and the summary ``shiftover status`` shows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import key_from_json, key_to_json, utcnow
from shiftover.diff.report import Difference, Key
from shiftover.diff.segments import KeyRange

_SEG = schema.diff_segments
_FAIL = schema.validation_failures


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def unfinished_run(store: Engine, migration: str) -> str | None:
    """The latest diff run of ``migration`` with segments still pending (a crashed run), if any."""
    query = (
        sa.select(_SEG.c.run_id)
        .where(_SEG.c.migration == migration, _SEG.c.state == "pending")
        .order_by(_SEG.c.updated_at.desc())
        .limit(1)
    )
    with store.connect() as conn:
        return conn.execute(query).scalar()


@dataclass
class DiffProgress:
    """One diff run's segments and findings, committed as each segment finishes."""

    store: Engine
    migration: str
    run_id: str

    def load_segments(self) -> list[tuple[KeyRange, bool]]:
        query = (
            sa.select(_SEG)
            .where(_SEG.c.migration == self.migration, _SEG.c.run_id == self.run_id)
            .order_by(_SEG.c.segment)
        )
        with self.store.connect() as conn:
            rows = conn.execute(query).all()
        return [(KeyRange.from_json(r.lo, r.hi), r.state != "pending") for r in rows]

    def save_segments(self, ranges: Sequence[KeyRange]) -> None:
        now = utcnow()
        rows = [
            {
                "migration": self.migration,
                "run_id": self.run_id,
                "segment": i,
                "lo": lo,
                "hi": hi,
                "state": "pending",
                "differences": 0,
                "updated_at": now,
            }
            for i, (lo, hi) in enumerate(r.to_json() for r in ranges)
        ]
        with self.store.begin() as conn:
            conn.execute(_SEG.insert(), rows)

    def finish_segment(self, segment: int, found: Sequence[Difference]) -> None:
        """The segment's differences and its state, in one transaction."""
        with self.store.begin() as conn:
            record_differences(conn, self.migration, self.run_id, found)
            conn.execute(
                _SEG.update()
                .where(_SEG.c.migration == self.migration, _SEG.c.run_id == self.run_id, _SEG.c.segment == segment)
                .values(state="differ" if found else "equal", differences=len(found), updated_at=utcnow())
            )

    def recorded_differences(self) -> list[Difference]:
        """Differences already found by finished segments of this run (on resume)."""
        return load_differences(self.store, self.migration, self.run_id)


def record_differences(conn: sa.Connection, migration: str, run_id: str, found: Sequence[Difference]) -> None:
    if not found:
        return
    now = utcnow()
    conn.execute(
        _FAIL.insert(),
        [
            {
                "migration": migration,
                "run_id": run_id,
                "key_json": key_to_json(d.key),
                "kind": d.kind,
                "columns": list(d.columns),
                "detail": d.detail or None,
                "found_at": now,
            }
            for d in found
        ],
    )


def save_differences(store: Engine, migration: str, run_id: str, found: Sequence[Difference]) -> None:
    with store.begin() as conn:
        record_differences(conn, migration, run_id, found)


def load_differences(store: Engine, migration: str, run_id: str, *, unrepaired: bool = False) -> list[Difference]:
    query = sa.select(_FAIL).where(_FAIL.c.migration == migration, _FAIL.c.run_id == run_id).order_by(_FAIL.c.id)
    if unrepaired:
        query = query.where(_FAIL.c.repaired_at.is_(None))
    with store.connect() as conn:
        return [
            Difference(key_from_json(r.key_json), r.kind, tuple(r.columns or ()), dict(r.detail or {}))
            for r in conn.execute(query)
        ]


def mark_repaired(store: Engine, migration: str, run_id: str, keys: Sequence[Key]) -> None:
    texts = [key_to_json(k) for k in keys]
    with store.begin() as conn:
        for i in range(0, len(texts), 500):
            conn.execute(
                _FAIL.update()
                .where(
                    _FAIL.c.migration == migration, _FAIL.c.run_id == run_id, _FAIL.c.key_json.in_(texts[i : i + 500])
                )
                .values(repaired_at=utcnow())
            )


@dataclass(frozen=True)
class ValidationStatus:
    run_id: str | None
    failures: int  # differing keys found by the last run
    unrepaired: int
    sample: list[dict[str, Any]]  # a few keys: key, kind, columns
    segments: int
    segments_done: int


def validation_status(store: Engine, migration: str, sample: int = 5) -> ValidationStatus:
    """The last diff run of ``migration``: what ``shiftover status`` prints."""
    with store.connect() as conn:
        run_id = conn.execute(
            sa.select(_SEG.c.run_id).where(_SEG.c.migration == migration).order_by(_SEG.c.updated_at.desc()).limit(1)
        ).scalar()
        if run_id is None:
            run_id = conn.execute(
                sa.select(_FAIL.c.run_id).where(_FAIL.c.migration == migration).order_by(_FAIL.c.id.desc()).limit(1)
            ).scalar()
        if run_id is None:
            return ValidationStatus(None, 0, 0, [], 0, 0)
        where = (_FAIL.c.migration == migration, _FAIL.c.run_id == run_id)
        failures = conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
        unrepaired = conn.execute(sa.select(sa.func.count()).where(*where, _FAIL.c.repaired_at.is_(None))).scalar_one()
        rows = conn.execute(sa.select(_FAIL).where(*where).order_by(_FAIL.c.id).limit(sample)).all()
        seg_where = (_SEG.c.migration == migration, _SEG.c.run_id == run_id)
        segments = conn.execute(sa.select(sa.func.count()).where(*seg_where)).scalar_one()
        done = conn.execute(sa.select(sa.func.count()).where(*seg_where, _SEG.c.state != "pending")).scalar_one()
    return ValidationStatus(
        run_id=run_id,
        failures=failures,
        unrepaired=unrepaired,
        sample=[{"key": r.key_json, "kind": r.kind, "columns": ", ".join(r.columns or ())} for r in rows],
        segments=segments,
        segments_done=done,
    )
