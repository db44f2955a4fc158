"""One run holds a migration at a time: a lease in the control store, and the fence that every
state-changing write checks inside its own transaction.

A run takes the lease (holder: its run id) before it acts. A second run is refused with the
holder's id, or waits when asked; a crashed holder's lease expires after ``ttl`` seconds and the
next run takes it over. The migration's *epoch* is the version of its state: every phase change,
every rollback and every change of lease holder bumps it. A fenced write (a phase change, a flag
flip, the acceptance of an approval) first re-checks, in the same transaction, that the lease is
still this run's and the epoch the one it last saw; a run overtaken by a rollback or by another
run changes nothing and gets ``LeaseLostError``.

The check is a conditional UPDATE of the migration's row, so it also takes that row's write lock
(PostgreSQL, MySQL) or the database's (SQLite) until the transaction ends: a rollback bumping the
epoch waits for a fenced write in flight, or makes it fail.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shiftover.control import schema
from shiftover.control.store import utcnow
from shiftover.errors import ControlStoreError, LeaseHeldError, LeaseLostError

DEFAULT_TTL_SECONDS = 60.0
_m = schema.migrations


@dataclass(frozen=True)
class LeaseState:
    """Who holds a migration and until when, and its epoch."""

    holder: str | None
    expires_at: datetime | None
    epoch: int
    phase: str

    def held_by_other(self, holder: str, now: datetime) -> bool:
        live = self.expires_at is not None and self.expires_at > now
        return self.holder is not None and self.holder != holder and live


def read_lease(engine: Engine | Connection, migration: str) -> LeaseState:
    query = sa.select(_m.c.lease_holder, _m.c.lease_expires_at, _m.c.epoch, _m.c.phase).where(_m.c.name == migration)
    if isinstance(engine, Connection):
        row = engine.execute(query).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(query).first()
    if row is None:
        raise ControlStoreError(f"no migration named {migration!r} in the control store")
    return LeaseState(row.lease_holder, row.lease_expires_at, int(row.epoch), row.phase)


@dataclass
class Lease:
    """A run's hold on a migration; ``check`` is the fence, ``bump`` records a change of state."""

    engine: Engine
    migration: str
    holder: str
    epoch: int
    ttl: float = DEFAULT_TTL_SECONDS
    lost: str | None = None  # why the heartbeat found the lease gone
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def check(self, conn: Connection) -> None:
        """Inside ``conn``'s transaction: refuse unless the lease is this run's at its epoch, and renew it."""
        done = conn.execute(
            _m.update()
            .where(_m.c.name == self.migration, _m.c.lease_holder == self.holder, _m.c.epoch == self.epoch)
            .values(lease_expires_at=utcnow() + timedelta(seconds=self.ttl))
        )
        if done.rowcount != 1:
            raise self._lost_error(read_lease(conn, self.migration))

    def bump(self, conn: Connection) -> int:
        """After ``check`` in the same transaction: the migration's state changed; returns the new epoch."""
        conn.execute(_m.update().where(_m.c.name == self.migration).values(epoch=_m.c.epoch + 1))
        self.epoch += 1
        return self.epoch

    def ensure(self) -> None:
        """Raise ``LeaseLostError`` now if the lease is gone (for long loops between fenced writes)."""
        with self.engine.begin() as conn:
            self.check(conn)

    def release(self) -> None:
        """Let the lease expire now; the holder stays recorded, so the same run (a suspended flow
        resuming) takes it back without changing the epoch, and any other run bumps it."""
        self.stop_heartbeat()
        with self.engine.begin() as conn:
            conn.execute(
                _m.update()
                .where(_m.c.name == self.migration, _m.c.lease_holder == self.holder)
                .values(lease_expires_at=utcnow())
            )

    def start_heartbeat(self) -> None:
        """Renew every third of the TTL from a daemon thread while the run lives."""
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.migration}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.ensure()
            except LeaseLostError as exc:
                self.lost = str(exc)
                return
            except Exception:  # a control store blip: the next beat tries again before expiry
                continue

    def _lost_error(self, now: LeaseState) -> LeaseLostError:
        if now.holder != self.holder:
            who = f"run {now.holder}" if now.holder else "a rollback (which revoked it)"
            why = f"the lease on {self.migration!r} was taken by {who}"
        else:
            why = f"{self.migration!r} changed under this run (epoch {self.epoch} -> {now.epoch}, phase {now.phase})"
        return LeaseLostError(self.migration, f"{why}; this run stops and changed nothing more")


def acquire_lease(
    engine: Engine,
    migration: str,
    holder: str,
    *,
    ttl: float = DEFAULT_TTL_SECONDS,
    wait_seconds: float = 0.0,
    poll_seconds: float = 1.0,
) -> Lease:
    """Take the migration's lease for ``holder``; refused (``LeaseHeldError``) while another live
    run holds it, after waiting up to ``wait_seconds``. A new holder bumps the epoch."""
    deadline = time.monotonic() + wait_seconds
    while True:
        epoch = _try_acquire(engine, migration, holder, ttl)
        if epoch is not None:
            return Lease(engine, migration, holder, epoch, ttl)
        state = read_lease(engine, migration)
        if time.monotonic() >= deadline:
            raise LeaseHeldError(migration, state.holder or "?", state.expires_at)
        time.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0.01)))


def _try_acquire(engine: Engine, migration: str, holder: str, ttl: float) -> int | None:
    now = utcnow()
    same = _m.c.lease_holder == holder
    with engine.begin() as conn:
        done = conn.execute(
            _m.update()
            .where(
                _m.c.name == migration,
                sa.or_(_m.c.lease_holder.is_(None), same, _m.c.lease_expires_at < now, _m.c.lease_expires_at.is_(None)),
            )
            .values(
                epoch=sa.case((same, _m.c.epoch), else_=_m.c.epoch + 1),
                lease_holder=holder,
                lease_expires_at=now + timedelta(seconds=ttl),
            )
        )
        if done.rowcount != 1:
            return None
        return read_lease(conn, migration).epoch


def revoke_lease(conn: Connection, migration: str) -> int:
    """Inside a rollback's transaction: no run holds the migration any more, and its epoch moves
    on, so every fenced write of the former holder fails. Returns the new epoch."""
    conn.execute(
        _m.update()
        .where(_m.c.name == migration)
        .values(epoch=_m.c.epoch + 1, lease_holder=None, lease_expires_at=None, updated_at=utcnow())
    )
    return read_lease(conn, migration).epoch
