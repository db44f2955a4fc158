"""One run holds a migration: the lease and its fence on every control-store engine (no Prefect)."""

from __future__ import annotations

import threading

import pytest

from shiftover.control.lease import acquire_lease, read_lease, revoke_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.errors import LeaseHeldError, LeaseLostError
from shiftover.flags.routing import WriteMode, read_routing, set_write_mode
from shiftover.phases import Phase


@pytest.fixture(params=["sqlite", "pg_database", "mariadb_database"])
def store(request: pytest.FixtureRequest, tmp_path) -> ControlStore:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/control.db")
    else:
        store = open_store(request.getfixturevalue(request.param)())
    store.register("m", {})
    return store


def test_a_second_holder_is_refused_and_a_crashed_ones_lease_is_taken_over(store: ControlStore) -> None:
    first = acquire_lease(store.engine, "m", "run-a", ttl=30)
    with pytest.raises(LeaseHeldError, match="is being run by run-a"):
        acquire_lease(store.engine, "m", "run-b")
    again = acquire_lease(store.engine, "m", "run-a")  # the same run (a suspended flow resuming)
    assert again.epoch == first.epoch
    first.release()  # as a crash would leave it once the TTL passes
    taken = acquire_lease(store.engine, "m", "run-b")
    assert taken.epoch == first.epoch + 1
    with pytest.raises(LeaseLostError, match="taken by run run-b"):
        first.ensure()


def test_a_fenced_write_fails_once_a_rollback_revoked_the_lease(store: ControlStore) -> None:
    lease = acquire_lease(store.engine, "m", "run-a")
    set_write_mode(store.engine, "m", WriteMode.DUAL_OLD_PRIMARY, "run-a", fence=lease)
    store.transition("m", Phase.DUAL_WRITING, "run-a", lease=lease)  # its own change: the epoch follows
    with store.engine.begin() as conn:
        revoke_lease(conn, "m")
    with pytest.raises(LeaseLostError, match="a rollback"):
        set_write_mode(store.engine, "m", WriteMode.DUAL_NEW_PRIMARY, "run-a", fence=lease)
    with pytest.raises(LeaseLostError):
        store.transition("m", Phase.BACKFILLING, "run-a", lease=lease)
    assert read_routing(store.engine, "m").writes is WriteMode.DUAL_OLD_PRIMARY
    assert store.phase("m") is Phase.DUAL_WRITING
    assert read_lease(store.engine, "m").holder is None


def test_two_runs_racing_for_the_lease_one_wins(store: ControlStore) -> None:
    barrier, won, lost = threading.Barrier(4), [], []

    def take(i: int) -> None:
        barrier.wait()
        try:
            won.append(acquire_lease(store.engine, "m", f"run-{i}"))
        except LeaseHeldError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == 3
    assert read_lease(store.engine, "m").holder == won[0].holder
