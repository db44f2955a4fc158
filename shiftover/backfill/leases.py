"""Segment leases for a distributed backfill: several workers share one plan in the control store.

A worker claims an unfinished segment by a conditional UPDATE of its checkpoint row (free, or its
lease expired), renews the lease from a heartbeat while it copies, and releases it when done. A
worker that dies stops renewing; once ``lease_expires_at`` passes, another worker claims the
segment and resumes from its last checkpoint. Checkpoints written with ``holder`` are fenced
(``checkpoints.record_chunk``): a worker that lost its lease cannot move the checkpoint.

Two claimers racing for one row: PostgreSQL and InnoDB re-check the UPDATE's WHERE against the
row as committed by the winner, so the loser matches no row. SQLite is refused (one file, one
machine: it cannot coordinate workers on several hosts).

Times come from each worker's clock (``utcnow``), as for the migration lease: keep the TTL well
above the clock skew between machines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.checkpoints import DONE, FAILED
from shiftover.control import schema
from shiftover.control.store import utcnow
from shiftover.engines import dialect_for
from shiftover.errors import ControlStoreError, SpecError

DEFAULT_SEGMENT_TTL_SECONDS = 30.0
_c = schema.checkpoints


def require_distributed_store(engine: Engine, field: str | None = None) -> None:
    """Refuse a control store that cannot coordinate workers on several machines; ``field``: the
    spec field that asked for workers, named in the refusal (a ``SpecError``)."""
    if not dialect_for(engine).shared_store:
        if field is not None:
            raise SpecError(
                field,
                "a distributed backfill needs a PostgreSQL or MariaDB/MySQL control store, and "
                f"{engine.url.render_as_string(hide_password=True)} is SQLite (one file on one machine): "
                "remove the field to copy in one process, or point --control-store at a shared server",
            )
        raise ControlStoreError(
            "a distributed backfill needs a PostgreSQL or MariaDB/MySQL control store; "
            f"{engine.url.render_as_string(hide_password=True)} is SQLite (one file on one machine): "
            "run the backfill in one process, or point --control-store at a shared server"
        )


@dataclass(frozen=True)
class SegmentLease:
    migration: str
    segment: int
    holder: str
    expires_at: datetime
    previous_holder: str | None  # set when this claim took over an expired lease


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


def _claimable(now: datetime, holder: str) -> sa.ColumnElement[bool]:
    return sa.and_(_unfinished(), _free(now, holder))


def _unfinished() -> sa.ColumnElement[bool]:
    return _c.c.state.not_in([DONE, FAILED])


def _free(now: datetime, holder: str) -> sa.ColumnElement[bool]:
    return sa.or_(
        _c.c.lease_holder.is_(None),
        _c.c.lease_holder == holder,
        _c.c.lease_expires_at.is_(None),
        _c.c.lease_expires_at < now,
    )


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
    require_distributed_store(engine)
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_c.c.segment, _c.c.lease_holder, sa.case((_free(now, holder), 1), else_=0).label("free"))
            .where(_c.c.migration == migration, _unfinished())
            .order_by(_c.c.segment)
        ).all()
    for candidate in (r for r in rows if r.free):
        expires = now + timedelta(seconds=ttl)
        with engine.begin() as conn:
            won = conn.execute(
                _c.update()
                .where(_c.c.migration == migration, _c.c.segment == candidate.segment, _claimable(now, holder))
                .values(lease_holder=holder, lease_expires_at=expires, heartbeat_at=now)
            ).rowcount
        if won == 1:
            previous = candidate.lease_holder if candidate.lease_holder not in (None, holder) else None
            return SegmentLease(migration, int(candidate.segment), holder, expires, previous), len(rows)
    return None, len(rows)


def renew_segment(engine: Engine, lease: SegmentLease, *, ttl: float = DEFAULT_SEGMENT_TTL_SECONDS) -> bool:
    """Extend a held lease; False when this worker no longer holds it."""
    now = utcnow()
    with engine.begin() as conn:
        done = conn.execute(
            _c.update()
            .where(_c.c.migration == lease.migration, _c.c.segment == lease.segment, _c.c.lease_holder == lease.holder)
            .values(lease_expires_at=now + timedelta(seconds=ttl), heartbeat_at=now)
        ).rowcount
    return done == 1


def release_segment(engine: Engine, lease: SegmentLease) -> bool:
    """Give the segment back (done or not); False when another worker had already taken it."""
    with engine.begin() as conn:
        done = conn.execute(
            _c.update()
            .where(_c.c.migration == lease.migration, _c.c.segment == lease.segment, _c.c.lease_holder == lease.holder)
            .values(lease_holder=None, lease_expires_at=None)
        ).rowcount
    return done == 1


@dataclass
class Heartbeat:
    """Renews a segment lease every third of the TTL from a daemon thread; ``lost`` once it could not."""

    engine: Engine
    lease: SegmentLease
    ttl: float = DEFAULT_SEGMENT_TTL_SECONDS
    lost: bool = False
    beats: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"segment-lease-{self.lease.segment}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not renew_segment(self.engine, self.lease, ttl=self.ttl):
                    self.lost = True
                    return
                self.beats += 1
            except Exception:  # a control-store blip: the next beat tries again before expiry
                continue
