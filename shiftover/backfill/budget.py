"""One rows/s budget for every worker of a distributed backfill, kept in the control store.

Each worker process has its own ``Throttle``; alone, N of them would copy N times the spec's
``max_rows_per_second``. With a shared budget a worker reserves its next chunk's rows in the
control store before reading them: one ``UPDATE`` of the migration's ``so_throttle_budgets`` row
moves ``next_slot`` to ``max(next_slot, now) + rows / rate`` and the worker sleeps until its
slot begins (``next_slot - rows / rate``). This is the in-process throttle's virtual schedule
(``Throttle.acquire``) made cluster-wide: the slots of all grants never overlap, so over any
window of T seconds the grants starting in it hold at most ``rate * T`` rows plus one grant.

The update is atomic on PostgreSQL and InnoDB (the row lock serialises racing workers, and each
one's new value is computed from the committed one: no read-modify-write in the worker); the
read of the slot comes after it, in the same transaction, under the same row lock. Time is the
control store's clock (``EngineDialect.store_clock``), never a worker's, so skewed workers
share one schedule. A pause grants nothing (workers hold in ``Throttle.wait_until_allowed``);
on resume the schedule restarts at now, with no burst saved up.

The rate comes with each draw from the worker's throttle settings: the spec's cap, overridden by
the throttle flag (``shiftover throttle NAME --max-rows-per-second``), which every worker re-reads
within its ``refresh_seconds``, so a retune reaches the whole cluster.

The lag probe is the cluster's too (``shared_lag``): the spec's ``lag_query`` runs on the server
whose lag it reads, and N workers each running it before every chunk would load that server N
times over. The budget row keeps the last reading and the store's clock when it was taken; a
worker that finds it older than the throttle's refresh interval claims the next probe with one
conditional ``UPDATE`` (only one claim wins per interval; a claim whose worker died lapses after
the same interval), runs the query and records the reading. Every other worker reads the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import utcnow
from shiftover.engines import dialect_for

_b = schema.throttle_budgets


@dataclass(frozen=True)
class Grant:
    """``rows`` reserved from ``starts_at`` (the store's clock), asked at ``drawn_at``."""

    rows: int
    starts_at: float
    drawn_at: float

    @property
    def wait_seconds(self) -> float:
        return max(0.0, self.starts_at - self.drawn_at)


@dataclass(frozen=True)
class BudgetState:
    granted_rows: int
    grants: int
    next_slot: float
    drawn_at: float | None
    now: float  # the store's clock when read


def ensure_budget(engine: Engine, migration: str) -> None:
    """Create the migration's budget row (idempotent; a racing creator's row is kept)."""
    with engine.connect() as conn:
        if conn.execute(sa.select(_b.c.migration).where(_b.c.migration == migration)).first():
            return
    try:
        with engine.begin() as conn:
            conn.execute(_b.insert().values(migration=migration, next_slot=0.0, updated_at=utcnow()))
    except sa.exc.IntegrityError:
        pass


def draw(engine: Engine, migration: str, rows: int, rate: float) -> Grant:
    """Reserve ``rows`` at ``rate`` rows/s; the grant says when its slot starts."""
    if rows <= 0 or rate <= 0:
        raise ValueError("a draw takes rows > 0 at a rate > 0")
    clock = dialect_for(engine).store_clock()
    span = rows / rate
    start = sa.case((_b.c.next_slot > clock, _b.c.next_slot), else_=clock)
    for _ in range(2):
        with engine.begin() as conn:
            won = conn.execute(
                _b.update()
                .where(_b.c.migration == migration)
                .values(
                    next_slot=start + sa.literal(span, sa.Double()),
                    drawn_at=clock,
                    granted_rows=_b.c.granted_rows + rows,
                    grants=_b.c.grants + 1,
                    updated_at=utcnow(),
                )
            ).rowcount
            if won == 1:
                row = conn.execute(sa.select(_b.c.next_slot, _b.c.drawn_at).where(_b.c.migration == migration)).one()
                return Grant(rows, float(row.next_slot) - span, float(row.drawn_at))
        ensure_budget(engine, migration)  # first draw of a migration planned before revision 0004
    raise RuntimeError(f"no throttle budget row for {migration}")  # pragma: no cover - created above


def shared_lag(engine: Engine, migration: str, probe: Callable[[], float | None], max_age: float) -> float | None:
    """The cluster's lag: the last reading when it is younger than ``max_age`` seconds (the
    store's clock), else this worker's own ``probe()``, recorded for the others, when it wins the
    claim to take it; a worker that loses the claim uses the last reading (None before the first)."""
    clock = dialect_for(engine).store_clock()
    stale = sa.or_(_b.c.lag_read_at.is_(None), _b.c.lag_read_at < clock - max_age)
    free = sa.or_(_b.c.lag_probe_until.is_(None), _b.c.lag_probe_until < clock)
    for _ in range(2):
        with engine.begin() as conn:
            claimed = conn.execute(
                _b.update()
                .where(_b.c.migration == migration, stale, free)
                .values(lag_probe_until=clock + sa.literal(max_age, sa.Double()))
            ).rowcount
            row = conn.execute(sa.select(_b.c.lag_value).where(_b.c.migration == migration)).first()
        if row is not None:
            break
        ensure_budget(engine, migration)  # a migration planned before revision 0006's first draw
    if not claimed:
        return None if row is None or row.lag_value is None else float(row.lag_value)
    value = probe()
    with engine.begin() as conn:
        conn.execute(
            _b.update()
            .where(_b.c.migration == migration)
            .values(lag_value=value, lag_read_at=clock, lag_probe_until=None)
        )
    return value


def read_budget(engine: Engine, migration: str) -> BudgetState | None:
    clock = dialect_for(engine).store_clock()
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_b.c.granted_rows, _b.c.grants, _b.c.next_slot, _b.c.drawn_at, clock.label("now")).where(
                _b.c.migration == migration
            )
        ).first()
    if row is None:
        return None
    drawn = float(row.drawn_at) if row.drawn_at is not None else None
    return BudgetState(int(row.granted_rows), int(row.grants), float(row.next_slot), drawn, float(row.now))


def clear_budget(engine: Engine, migration: str) -> None:
    with engine.begin() as conn:
        conn.execute(_b.delete().where(_b.c.migration == migration))
