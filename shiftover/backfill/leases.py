"""Segment leases for a distributed backfill: several workers share one plan in the control store.

The claim, heartbeat and release are ``shiftover.control.segment_leases`` over the backfill's
checkpoint rows (``backfill_pool``); the validation diff uses the same machinery over its own
segment rows. Checkpoints written with ``holder`` are fenced (``checkpoints.record_chunk``): a
worker that lost its lease cannot move the checkpoint. SQLite is refused (one file, one machine:
it cannot coordinate workers on several hosts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.checkpoints import DONE, FAILED
from shiftover.control import schema
from shiftover.control import segment_leases as _leases
from shiftover.control.segment_leases import (
    DEFAULT_SEGMENT_TTL_SECONDS,
    Heartbeat,
    SegmentLease,
    SegmentPool,
    release_segment,
    renew_segment,
)
from shiftover.control.store import utcnow

__all__ = [
    "DEFAULT_SEGMENT_TTL_SECONDS",
    "Heartbeat",
    "LeaseRow",
    "SegmentLease",
    "backfill_pool",
    "claim_next",
    "claim_segment",
    "read_leases",
    "release_segment",
    "renew_segment",
    "require_distributed_store",
]

_c = schema.checkpoints


def backfill_pool(migration: str) -> SegmentPool:
    """The backfill plan's segments: ``migration``'s checkpoint rows, finished once done or failed."""
    return SegmentPool(_c, (("migration", migration),), (DONE, FAILED))


def require_distributed_store(engine: Engine, field: str | None = None) -> None:
    """Refuse a control store that cannot coordinate workers on several machines; ``field``: the
    spec field that asked for workers, named in the refusal (a ``SpecError``)."""
    _leases.require_distributed_store(engine, field, what="backfill")


@dataclass(frozen=True)
class LeaseRow:
    segment: int
    state: str
    holder: str | None
    expires_at: datetime | None
    heartbeat_at: datetime | None
    rows_copied: int


def read_leases(engine: Engine, migration: str) -> list[LeaseRow]:
    query = (
        sa.select(
            _c.c.segment, _c.c.state, _c.c.lease_holder, _c.c.lease_expires_at, _c.c.heartbeat_at, _c.c.rows_copied
        )
        .where(_c.c.migration == migration)
        .order_by(_c.c.segment)
    )
    with engine.connect() as conn:
        return [
            LeaseRow(int(r.segment), r.state, r.lease_holder, r.lease_expires_at, r.heartbeat_at, int(r.rows_copied))
            for r in conn.execute(query)
        ]


def live_leases(engine: Engine, migration: str) -> dict[int, tuple[str, datetime]]:
    """Unfinished segments some worker holds now (lease not expired): segment -> (holder, until)."""
    now = utcnow()
    held = {}
    for row in read_leases(engine, migration):
        if row.holder is not None and row.state not in (DONE, FAILED) and row.expires_at is not None:
            until = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=now.tzinfo)
            if until > now:
                held[row.segment] = (row.holder, until)
    return held


def claim_segment(
    engine: Engine, migration: str, holder: str, *, ttl: float = DEFAULT_SEGMENT_TTL_SECONDS
) -> SegmentLease | None:
    """Take the lowest unfinished segment that is free or whose lease expired; None when there is none
    to take now (every unfinished segment is held by a live worker, failed, or all are done)."""
    return claim_next(engine, migration, holder, ttl=ttl)[0]


def claim_next(
    engine: Engine, migration: str, holder: str, *, ttl: float = DEFAULT_SEGMENT_TTL_SECONDS
) -> tuple[SegmentLease | None, int]:
    """``claim_segment``, and how many segments were unfinished when it looked (0: nothing is left
    for any worker), from the same read: an idle worker polls the control store once per wait."""
    return _leases.claim_next(engine, backfill_pool(migration), holder, ttl=ttl)
