"""Backfill progress in the control store (``so_checkpoints``): the plan, and one row per segment
updated after every chunk's target commit, so any re-run resumes where the last one stopped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.keyset import Key, KeyRange, Segment
from shiftover.control import schema
from shiftover.control.store import key_from_json, key_to_json, utcnow
from shiftover.errors import SegmentLeaseLostError

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass(frozen=True)
class SegmentState:
    segment: Segment
    last_key: Key | None
    rows_copied: int
    state: str
    updated_at: datetime

    @property
    def done(self) -> bool:
        return self.state == DONE

    @property
    def remaining(self) -> KeyRange:
        """The part of the segment not yet committed."""
        lo = self.last_key if self.last_key is not None else self.segment.range.lo
        return KeyRange(lo, self.segment.range.hi)


def _key_or_none(text: str | None) -> Key | None:
    return key_from_json(text) if text is not None else None


def _json_or_none(key: Key | None) -> str | None:
    return key_to_json(key) if key is not None else None


def load_plan(engine: Engine, migration: str) -> list[SegmentState]:
    """The saved segments of a migration's backfill, in order (empty when none was planned)."""
    t = schema.checkpoints
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.migration == migration).order_by(t.c.segment)).all()
    return [
        SegmentState(
            segment=Segment(r.segment, KeyRange(_key_or_none(r.lo), _key_or_none(r.hi))),
            last_key=_key_or_none(r.last_key),
            rows_copied=int(r.rows_copied),
            state=r.state,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


def save_plan(engine: Engine, migration: str, segments: list[Segment]) -> list[SegmentState]:
    """Persist a new plan unless one exists (a re-run keeps the first plan and its progress)."""
    t = schema.checkpoints
    with engine.begin() as conn:
        exists = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.migration == migration)).scalar()
        if not exists:
            now = utcnow()
            conn.execute(
                t.insert(),
                [
                    {
                        "migration": migration,
                        "segment": s.index,
                        "lo": _json_or_none(s.range.lo),
                        "hi": _json_or_none(s.range.hi),
                        "last_key": None,
                        "rows_copied": 0,
                        "state": PENDING,
                        "updated_at": now,
                    }
                    for s in segments
                ],
            )
    return load_plan(engine, migration)


def clear_plan(engine: Engine, migration: str) -> int:
    """Forget a finished plan so a top-up backfill can plan afresh; returns rows removed."""
    t = schema.checkpoints
    with engine.begin() as conn:
        return conn.execute(t.delete().where(t.c.migration == migration)).rowcount or 0


def record_chunk(
    engine: Engine,
    migration: str,
    segment: int,
    last_key: Key | None,
    rows: int,
    *,
    done: bool,
    to_end: bool = False,
    holder: str | None = None,
) -> None:
    """Advance a segment's checkpoint past a chunk already committed in the target (``to_end``: the
    segment is copied to its open end, which has no key: its last key is cleared).

    ``holder``: a distributed worker's id; the checkpoint moves only while that worker still holds
    the segment's lease, else ``SegmentLeaseLostError`` (the new holder resumes from this checkpoint).
    """
    t = schema.checkpoints
    values: dict[str, Any] = {
        "rows_copied": t.c.rows_copied + rows,
        "state": DONE if done else RUNNING,
        "updated_at": utcnow(),
    }
    if last_key is not None:
        values["last_key"] = key_to_json(last_key)
    elif to_end:
        values["last_key"] = None
    where = [t.c.migration == migration, t.c.segment == segment]
    if holder is not None:
        where.append(t.c.lease_holder == holder)
    with engine.begin() as conn:
        done_rows = conn.execute(t.update().where(*where).values(**values)).rowcount
    if holder is not None and done_rows != 1:
        raise SegmentLeaseLostError(
            migration, f"worker {holder} lost its lease on segment {segment}; its last chunk is left to the new holder"
        )


def mark_segment(engine: Engine, migration: str, segment: int, state: str) -> None:
    t = schema.checkpoints
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.migration == migration, t.c.segment == segment)
            .values(state=state, updated_at=utcnow())
        )


@dataclass(frozen=True)
class BackfillStatus:
    """What ``shiftover status`` prints about a backfill."""

    migration: str
    rows_copied: int
    segments: int
    segments_done: int
    per_segment: list[dict[str, Any]]

    @property
    def complete(self) -> bool:
        return self.segments > 0 and self.segments_done == self.segments


def backfill_status(engine: Engine, migration: str) -> BackfillStatus:
    """Rows copied and the state of every segment, read from the checkpoints."""
    states = load_plan(engine, migration)
    return BackfillStatus(
        migration=migration,
        rows_copied=sum(s.rows_copied for s in states),
        segments=len(states),
        segments_done=sum(1 for s in states if s.done),
        per_segment=[
            {
                "segment": s.segment.index,
                "range": s.segment.range.describe(),
                "state": s.state,
                "rows_copied": s.rows_copied,
                # a finished segment is copied to its end: the open last segment's end has no key
                "last_key": "end" if s.done and s.last_key is None else _json_or_none(s.last_key),
                "updated_at": s.updated_at.isoformat() if s.updated_at else None,
            }
            for s in states
        ],
    )
