"""Segment leases in a PostgreSQL or MariaDB control store: claim, race, renew, expire and take
over, fenced checkpoints; SQLite refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from shiftover.backfill import checkpoints, leases
from shiftover.backfill.keyset import KeyRange, Segment
from shiftover.control.store import ControlStore, open_store
from shiftover.control.work_progress import WorkProgress
from shiftover.errors import ControlStoreError, SegmentLeaseLostError


@pytest.fixture(params=["postgres", "mariadb"])
def shared_store(request: pytest.FixtureRequest) -> ControlStore:
    fixture = "pg_database" if request.param == "postgres" else "mariadb_database"
    factory: Callable[[], str] = request.getfixturevalue(fixture)
    store = open_store(factory())
    store.register("m1", {"name": "m1"})
    return store


def _plan(store: ControlStore, n: int) -> None:
    segments = [
        Segment(i, KeyRange((i * 100,) if i else None, ((i + 1) * 100,) if i < n - 1 else None)) for i in range(n)
    ]
    checkpoints.save_plan(store.engine, "m1", segments)


def test_claims_take_distinct_segments_then_none(shared_store: ControlStore) -> None:
    _plan(shared_store, 3)
    got = [leases.claim_segment(shared_store.engine, "m1", f"w{i}", ttl=30) for i in range(3)]
    assert sorted(g.segment for g in got if g) == [0, 1, 2]
    # none free, three still unfinished: a worker waits for their leases to expire
    assert leases.claim_next(shared_store.engine, "m1", "w9", ttl=30) == (None, 3)
    held = {r.segment: r.holder for r in leases.read_leases(shared_store.engine, "m1")}
    assert held == {g.segment: g.holder for g in got if g}


def test_racing_claimers_only_one_wins(shared_store: ControlStore) -> None:
    _plan(shared_store, 1)
    barrier = threading.Barrier(8)
    results: dict[str, leases.SegmentLease | None] = {}

    def claim(name: str) -> None:
        barrier.wait()
        results[name] = leases.claim_segment(shared_store.engine, "m1", name, ttl=30)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [name for name, lease in results.items() if lease is not None]
    assert len(winners) == 1
    assert leases.read_leases(shared_store.engine, "m1")[0].holder == winners[0]


def test_expired_lease_is_taken_over_and_old_holder_is_fenced(shared_store: ControlStore) -> None:
    _plan(shared_store, 1)
    engine = shared_store.engine
    first = leases.claim_segment(engine, "m1", "dead", ttl=1)
    assert first is not None
    checkpoints.record_chunk(engine, "m1", 0, (50,), 50, done=False, holder="dead")
    assert leases.claim_segment(engine, "m1", "alive", ttl=30) is None  # still live
    time.sleep(1.3)
    taken = leases.claim_segment(engine, "m1", "alive", ttl=30)
    assert taken is not None and taken.segment == 0 and taken.previous_holder == "dead"
    # the new holder resumes from the old holder's checkpoint
    state = checkpoints.load_plan(engine, "m1")[0]
    assert state.remaining.lo == (50,) and state.rows_copied == 50
    # the old holder can neither checkpoint, renew nor release any more
    with pytest.raises(SegmentLeaseLostError):
        checkpoints.record_chunk(engine, "m1", 0, (80,), 30, done=False, holder="dead")
    assert not leases.renew_segment(engine, first)
    assert not leases.release_segment(engine, first)
    checkpoints.record_chunk(engine, "m1", 0, None, 50, done=True, to_end=True, holder="alive")
    assert leases.release_segment(engine, taken)
    row = leases.read_leases(engine, "m1")[0]
    assert row.state == checkpoints.DONE and row.holder is None and row.rows_copied == 100
    # done segments are never claimed, and none is left unfinished: a worker stops
    assert leases.claim_next(engine, "m1", "late", ttl=30) == (None, 0)


def test_heartbeat_keeps_a_short_lease_alive(shared_store: ControlStore) -> None:
    _plan(shared_store, 1)
    engine = shared_store.engine
    # 3 s, not shorter: MariaDB keeps the expiry to the whole second, so a sub-second lease could
    # read as expired already
    lease = leases.claim_segment(engine, "m1", "w1", ttl=3.0)
    assert lease is not None
    beat = leases.Heartbeat(engine, lease, ttl=3.0).start()
    try:
        time.sleep(4.5)  # past the first expiry: only the beats keep it
        assert leases.claim_segment(engine, "m1", "w2", ttl=30) is None
    finally:
        beat.stop()
    assert beat.beats >= 3 and not beat.lost
    time.sleep(4.0)
    assert leases.claim_segment(engine, "m1", "w2", ttl=30) is not None  # stopped beating: expired


def test_sqlite_control_store_is_refused(control_store: ControlStore) -> None:
    with pytest.raises(ControlStoreError, match="PostgreSQL or MariaDB"):
        leases.claim_segment(control_store.engine, "m1", "w1")


def test_heartbeat_gives_up_a_segment_whose_work_stalls(shared_store: ControlStore) -> None:
    """A fake clock drives the stall limit: progress and deliberate holds keep the lease, idle time
    past the limit cuts it short, cancels the work's statement, audits it; another worker takes
    the segment over and the stalled holder is fenced."""
    _plan(shared_store, 1)
    engine = shared_store.engine
    lease = leases.claim_segment(engine, "m1", "w1", ttl=30)
    assert lease is not None
    now = [0.0]
    progress = WorkProgress(clock=lambda: now[0])
    beat = leases.Heartbeat(engine, lease, ttl=30, progress=progress, stall_seconds=10)
    cancelled: list[str] = []
    with progress.on_stall(lambda: cancelled.append("left")):
        pass  # no longer running: not cancelled
    with progress.on_stall(lambda: cancelled.append("write")):
        now[0] = 9.0
        assert beat.beat()
        progress.advance()
        now[0] = 18.0
        assert beat.beat()  # 9 s idle
        with progress.holding():  # a paused throttle is not a stall
            now[0] = 40.0
            assert beat.beat()
        now[0] = 50.0
        assert beat.beat()  # 10 s since the hold ended: at the limit, not past it
        assert leases.claim_segment(engine, "m1", "w2", ttl=30) is None  # still renewed
        now[0] = 50.5
        assert not beat.beat()
    assert beat.stalled and progress.stalled and not beat.lost and beat.beats == 4
    assert cancelled == ["write"]
    entries = shared_store.audit_entries("m1", "segment_stalled")
    assert [(e["actor"], e["detail"]["segment"], e["detail"]["idle_seconds"]) for e in entries] == [("w1", 0, 10.5)]
    taken = leases.claim_segment(engine, "m1", "w2", ttl=30)  # cut short: free at once, not after the TTL
    assert taken is not None and taken.previous_holder == "w1"
    with pytest.raises(SegmentLeaseLostError):
        checkpoints.record_chunk(engine, "m1", 0, (50,), 50, done=False, holder="w1")
