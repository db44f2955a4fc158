"""Segment leases: several workers share one plan of segments in the control store.

One table row per segment (a backfill's ``so_checkpoints``, a diff's ``so_diff_segments``); a
``SegmentPool`` names the table, the columns that pick one plan (the migration, a diff's run) and
the states a worker no longer claims. A worker claims an unfinished segment by a conditional UPDATE
of its row (free, or its lease expired), renews the lease from a heartbeat while it works, and
releases it when done. A worker that dies stops renewing; once ``lease_expires_at`` passes,
another worker claims the segment. ``work_claimed_segments`` is that loop, for any kind of work.

Two claimers racing for one row: PostgreSQL and InnoDB re-check the UPDATE's WHERE against the
row as committed by the winner, so the loser matches no row. SQLite is refused (one file, one
machine: it cannot coordinate workers on several hosts).

A worker alive but stuck (its work blocked in a database call) would renew forever: the work
reports progress (``WorkProgress``) and the heartbeat renews only while progress was seen within
``stall_seconds``. Past it, the heartbeat cuts the lease short, records why in the audit log and
cancels the work's statements where it can; the stuck work, if it ever returns, is fenced as a
worker whose lease expired.

Times come from each worker's clock (``utcnow``), as for the migration lease: keep the TTL well
above the clock skew between machines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control.store import ControlStore, utcnow
from shiftover.control.work_progress import WorkProgress
from shiftover.engines import dialect_for
from shiftover.errors import ControlStoreError, SegmentLeaseLostError, SpecError

DEFAULT_SEGMENT_TTL_SECONDS = 30.0
DEFAULT_STALL_SECONDS = 600.0  # the spec fields' default: longer than any one chunk or checksum query should take
CLAIM_CANDIDATES = 16  # free segments one claim reads; racing claimers take the next when they lose one
R = TypeVar("R")
log = logging.getLogger(__name__)


def require_distributed_store(engine: Engine, field: str | None = None, *, what: str = "backfill") -> None:
    """Refuse a control store that cannot coordinate workers on several machines; ``field``: the
    spec field that asked for workers, named in the refusal (a ``SpecError``); ``what``: the work."""
    if dialect_for(engine).shared_store:
        return
    where = f"{engine.url.render_as_string(hide_password=True)} is SQLite (one file on one machine)"
    if field is not None:
        raise SpecError(
            field,
            f"a distributed {what} needs a PostgreSQL or MariaDB/MySQL control store, and {where}: "
            f"remove the field to run the {what} in one process, or point --control-url at a shared server",
        )
    raise ControlStoreError(
        f"a distributed {what} needs a PostgreSQL or MariaDB/MySQL control store; {where}: "
        f"run the {what} in one process, or point --control-url at a shared server"
    )


@dataclass(frozen=True)
class SegmentPool:
    """The segments of one plan: ``table`` has ``segment``, ``state``, ``lease_holder``,
    ``lease_expires_at`` and ``heartbeat_at`` columns; ``scope`` the (column, value) pairs that pick
    the plan's rows; ``finished`` the states no worker claims again."""

    table: sa.Table
    scope: tuple[tuple[str, Any], ...]
    finished: tuple[str, ...]

    def plan(self) -> list[sa.ColumnElement[bool]]:
        return [self.table.c[name] == value for name, value in self.scope]

    def row(self, segment: int) -> list[sa.ColumnElement[bool]]:
        return [*self.plan(), self.table.c.segment == segment]

    def unfinished(self) -> sa.ColumnElement[bool]:
        return self.table.c.state.not_in(self.finished)

    def free(self, now: datetime, holder: str) -> sa.ColumnElement[bool]:
        c = self.table.c
        return sa.or_(
            c.lease_holder.is_(None), c.lease_holder == holder, c.lease_expires_at.is_(None), c.lease_expires_at < now
        )


@dataclass(frozen=True)
class SegmentLease:
    pool: SegmentPool
    segment: int
    holder: str
    expires_at: datetime
    previous_holder: str | None  # set when this claim took over an expired lease

    @property
    def migration(self) -> str:
        return str(dict(self.pool.scope)["migration"])


def claim_next(
    engine: Engine,
    pool: SegmentPool,
    holder: str,
    *,
    ttl: float = DEFAULT_SEGMENT_TTL_SECONDS,
    avoid: Collection[int] = (),
) -> tuple[SegmentLease | None, int]:
    """Take the lowest unfinished segment that is free or whose lease expired (None when there is
    none to take now), and how many segments were unfinished when it looked (0: nothing is left for
    any worker), from the same read: an idle worker polls the control store once per wait.
    ``avoid``: segments not to take now (ones this worker just gave up as stalled)."""
    require_distributed_store(engine)
    now, c = utcnow(), pool.table.c
    free = sa.case((pool.free(now, holder), 1), else_=0)
    # The free segments first, a few at a time, with the count of all unfinished ones from the same
    # read: a diff of a billion rows has some 30,000 segments, and a claim must not fetch them all.
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.segment, c.lease_holder, free.label("free"), sa.func.count().over().label("unfinished"))
            .where(*pool.plan(), pool.unfinished())
            .order_by(free.desc(), c.segment)
            .limit(CLAIM_CANDIDATES)
        ).all()
    unfinished = int(rows[0].unfinished) if rows else 0
    for candidate in (r for r in rows if r.free and r.segment not in avoid):
        expires = now + timedelta(seconds=ttl)
        with engine.begin() as conn:
            won = conn.execute(
                pool.table.update()
                .where(*pool.row(candidate.segment), pool.unfinished(), pool.free(now, holder))
                .values(lease_holder=holder, lease_expires_at=expires, heartbeat_at=now)
            ).rowcount
        if won == 1:
            previous = candidate.lease_holder if candidate.lease_holder not in (None, holder) else None
            return SegmentLease(pool, int(candidate.segment), holder, expires, previous), unfinished
    return None, unfinished


def renew_segment(engine: Engine, lease: SegmentLease, *, ttl: float = DEFAULT_SEGMENT_TTL_SECONDS) -> bool:
    """Extend a held lease; False when this worker no longer holds it."""
    now, t = utcnow(), lease.pool.table
    with engine.begin() as conn:
        done = conn.execute(
            t.update()
            .where(*lease.pool.row(lease.segment), t.c.lease_holder == lease.holder)
            .values(lease_expires_at=now + timedelta(seconds=ttl), heartbeat_at=now)
        ).rowcount
    return done == 1


def release_segment(engine: Engine, lease: SegmentLease) -> bool:
    """Give the segment back (done or not); False when another worker had already taken it."""
    t = lease.pool.table
    with engine.begin() as conn:
        done = conn.execute(
            t.update()
            .where(*lease.pool.row(lease.segment), t.c.lease_holder == lease.holder)
            .values(lease_holder=None, lease_expires_at=None)
        ).rowcount
    return done == 1


@dataclass
class Heartbeat:
    """Renews a segment lease every third of the TTL from a daemon thread; ``lost`` once it could not.

    With ``progress`` and ``stall_seconds``, it renews only while the work moved within
    ``stall_seconds``; past it, ``stalled`` is set, the lease is cut short (expired now, so another
    worker takes the segment over at once), the stall is audited and the work's statements cancelled."""

    engine: Engine
    lease: SegmentLease
    ttl: float = DEFAULT_SEGMENT_TTL_SECONDS
    progress: WorkProgress | None = None
    stall_seconds: float | None = None
    lost: bool = False
    stalled: bool = False
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
                if not self.beat():
                    return
            except Exception:  # a control-store blip: the next beat tries again before expiry
                continue

    def beat(self) -> bool:
        """One beat: renew, or give the lease up (lost, or the work stalled); False when it stops."""
        if self.progress is not None and self.stall_seconds is not None:
            idle = self.progress.idle_seconds()
            if idle > self.stall_seconds:
                self.give_up_stalled(idle)
                return False
        if not renew_segment(self.engine, self.lease, ttl=self.ttl):
            self.lost = True
            return False
        self.beats += 1
        return True

    def give_up_stalled(self, idle: float) -> None:
        assert self.progress is not None
        self.stalled = True
        lease, table = self.lease, self.lease.pool.table.name
        log.warning(
            "segment %d of %s (%s): no progress for %.0f s (stall_seconds %g); %s gives its lease up",
            lease.segment,
            table,
            dict(lease.pool.scope),
            idle,
            self.stall_seconds,
            lease.holder,
        )
        self.progress.declare_stalled()  # its statement cancelled before another worker can claim the segment
        expire_segment(self.engine, lease)
        detail = {"table": table, "segment": lease.segment, "idle_seconds": round(idle, 1)}
        ControlStore(self.engine).audit(lease.migration, lease.holder, "segment_stalled", detail)


def expire_segment(engine: Engine, lease: SegmentLease) -> bool:
    """End a held lease now but keep its holder: the segment is free to claim, and this holder's
    checkpoints stay fenced the moment another worker claims it."""
    t = lease.pool.table
    with engine.begin() as conn:
        done = conn.execute(
            t.update()
            .where(*lease.pool.row(lease.segment), t.c.lease_holder == lease.holder)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        ).rowcount
    return done == 1


@dataclass
class ClaimedWork(Generic[R]):
    """What one worker's loop did: each segment's result, and the segments it took over or lost."""

    results: list[R] = field(default_factory=list)
    taken_over: list[int] = field(default_factory=list)  # segments claimed from an expired lease
    lost: list[int] = field(default_factory=list)  # segments this worker lost to another
    stalled: list[int] = field(default_factory=list)  # segments given up: no progress within the stall limit
    seconds: float = 0.0


def work_claimed_segments(
    engine: Engine,
    pool: SegmentPool,
    worker_id: str,
    work: Callable[[SegmentLease, WorkProgress], R],
    *,
    ttl: float = DEFAULT_SEGMENT_TTL_SECONDS,
    stall_seconds: float | None = DEFAULT_STALL_SECONDS,
    wait_for_others: bool = True,
    poll_seconds: float = 1.0,
    max_seconds: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> ClaimedWork[R]:
    """Claim a segment, ``work`` on it under a heartbeat, release it; until every segment is
    finished, ``max_seconds`` pass or ``stop()`` says so. A worker with nothing to claim while
    others hold unfinished segments keeps polling (unless told not to wait), so the survivors take
    over a dead worker's segment once its lease expires. ``work`` reports its progress on the
    ``WorkProgress`` it is given; with none for ``stall_seconds`` the lease is given up (see
    ``Heartbeat``) and this worker leaves the segment to the others for one TTL before it may take
    it back (alone, it retries it). ``work`` raising ``SegmentLeaseLostError`` counts the segment
    as lost; any other error ends the loop (the lease released)."""
    require_distributed_store(engine)
    done: ClaimedWork[R] = ClaimedWork()
    started = time.monotonic()
    gave_up: dict[int, float] = {}  # stalled segment -> when this worker may take it again
    while (max_seconds is None or time.monotonic() - started < max_seconds) and not (stop and stop()):
        now = time.monotonic()
        avoid = [segment for segment, until in gave_up.items() if until > now]
        lease, unfinished = claim_next(engine, pool, worker_id, ttl=ttl, avoid=avoid)
        if lease is None:
            if not wait_for_others or not unfinished:
                break
            time.sleep(poll_seconds)  # held by live workers: take over any whose lease expires
            continue
        if lease.previous_holder is not None:
            done.taken_over.append(lease.segment)
        progress = WorkProgress()
        beat = Heartbeat(engine, lease, ttl, progress, stall_seconds).start()
        finished = False
        try:
            done.results.append(work(lease, progress))
            finished = True
        except SegmentLeaseLostError:
            done.lost.append(lease.segment)
        finally:
            beat.stop()
            if beat.stalled:
                done.stalled.append(lease.segment)
                gave_up[lease.segment] = time.monotonic() + ttl  # another worker's turn first
            if finished or not beat.stalled:  # a stalled lease was cut short: its holder stays, so a takeover shows
                release_segment(engine, lease)
    done.seconds = time.monotonic() - started
    return done
