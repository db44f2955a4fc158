"""When the control store itself is down, queued keys and counters wait in memory, then land."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from shiftover.control.store import ControlStore, utcnow
from shiftover.dualwrite.replicator import Replicator
from shiftover.metrics import SECONDARY_ERRORS, SECONDARY_WRITES, Recorder, error_rate
from shiftover.reconcile import queue_depth

DEAD_STORE = "sqlite:////nonexistent-dir/control.db"


def test_keys_and_counters_survive_a_control_store_outage(control_store: ControlStore) -> None:
    dead = sa.create_engine(DEAD_STORE)
    recorder = Recorder(dead, "m")
    replicator = Replicator(dead, "m", recorder, asynchronous=False)
    replicator.park([((1,), "upsert"), ((2,), "delete")], "new store down")
    recorder.count(SECONDARY_WRITES, 2)
    recorder.count(SECONDARY_ERRORS, 2)
    assert replicator.backlog == 2
    assert recorder.flush() is False
    assert replicator.retry_backlog() == 2  # still down: nothing lost, nothing enqueued

    replicator.store = recorder.store = control_store.engine  # the store is back
    assert replicator.retry_backlog() == 0
    assert recorder.flush() is True
    assert queue_depth(control_store.engine, "m")["pending"] == 2
    assert error_rate(control_store.engine, "m", utcnow() - timedelta(minutes=1)) == (2, 2)
