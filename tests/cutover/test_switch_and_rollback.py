"""Issue 5 §2–3: the fenced write switch (two concurrent runs, one switch) and rollback from
every reversible phase, seen by an application's flag client (the delay is printed; the benchmark
bench/dualwrite.py measures it)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from shiftover.control import schema
from shiftover.control.store import ControlStore, open_store, utcnow
from shiftover.cutover import WriteSwitch, read_write_fence, switch_writes
from shiftover.errors import FlagError, GateError, PhaseError
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import WriteMode, read_routing, set_write_mode
from shiftover.phases import ORDER, ROLLBACK_FROM, Phase
from shiftover.reconcile import enqueue

from .conftest import Setup

CONTROL_STORES = ["sqlite", "postgres"]
WATCH_SECONDS = 60  # how long a flag client is given to see a flip: generous, the machine is shared


@pytest.fixture(params=CONTROL_STORES)
def store(request: pytest.FixtureRequest, tmp_path) -> ControlStore:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path}/control.db")
    return open_store(request.getfixturevalue("pg_database")())


def ready_to_switch(store: ControlStore, name: str, diff_passed: bool = True) -> None:
    store.register(name, {})
    set_write_mode(store.engine, name, WriteMode.DUAL_OLD_PRIMARY, "test")
    with store.engine.begin() as conn:
        conn.execute(
            schema.gate_results.insert().values(
                migration=name,
                stage="switch_writes",
                gate="checksum",
                passed=diff_passed,
                blocking=True,
                summary="0 differences" if diff_passed else "3 rows differ",
                report={},
                at=utcnow(),
            )
        )


def race(store: ControlStore, name: str) -> list[object]:
    """Two runs switch at the same moment; each returns its WriteSwitch or the error it got."""
    barrier, outcomes = threading.Barrier(2), [None, None]

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = switch_writes(store.engine, name, f"run-{i}")
        except FlagError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return outcomes


def test_two_concurrent_switches_switch_once(store: ControlStore) -> None:
    for round_ in range(5):
        name = f"race-{round_}"
        ready_to_switch(store, name)
        before = read_routing(store.engine, name).version
        outcomes = race(store, name)
        switches = store.audit_entries(name, action="write_switch")
        assert len(switches) == 1, outcomes  # exactly one run flipped the flag
        assert read_routing(store.engine, name).version == before + 1
        winner = [o for o in outcomes if isinstance(o, WriteSwitch)]
        assert winner and all(w.version == before + 1 for w in winner)
        assert len({w.at for w in winner}) == 1  # a run that found the switch made reports its exact time
        # the other run either lost the compare-and-set or found the switch already made
        assert all(isinstance(o, FlagError | WriteSwitch) for o in outcomes)
        flips = [a for a in store.audit_entries(name, action="flag") if a["detail"]["value"] == "dual_new_primary"]
        assert len(flips) == 1
        # a re-run finds the switch made and reports the audited one, without switching again
        assert switch_writes(store.engine, name, "re-run") == winner[0]
        assert len(store.audit_entries(name, action="write_switch")) == 1


def test_the_compare_and_set_refuses_a_stale_switch(store: ControlStore) -> None:
    ready_to_switch(store, "stale")
    seen = read_routing(store.engine, "stale").version
    set_write_mode(store.engine, "stale", WriteMode.DUAL_NEW_PRIMARY, "other run", expected_version=seen)
    with pytest.raises(FlagError, match="another run changed it first"):
        set_write_mode(store.engine, "stale", WriteMode.DUAL_NEW_PRIMARY, "late run", expected_version=seen)


def test_the_fence_refuses_a_queue_backlog_or_a_dirty_diff(control_store: ControlStore) -> None:
    ready_to_switch(control_store, "queued")
    enqueue(control_store.engine, "queued", [((1,), "upsert")], "new store down")
    with pytest.raises(GateError, match=r"reconciliation queue not drained .1 pending"):
        switch_writes(control_store.engine, "queued", "test")
    ready_to_switch(control_store, "dirty", diff_passed=False)
    with pytest.raises(GateError, match=r"last checksum diff .* failed: 3 rows differ"):
        switch_writes(control_store.engine, "dirty", "test")
    control_store.register("never-diffed", {})
    set_write_mode(control_store.engine, "never-diffed", WriteMode.DUAL_OLD_PRIMARY, "test")
    assert read_write_fence(control_store.engine, "never-diffed").problems == [
        "no checksum diff has run for this migration"
    ]
    for name in ("queued", "dirty"):
        assert read_routing(control_store.engine, name).writes is WriteMode.DUAL_OLD_PRIMARY
        assert not control_store.audit_entries(name, action="write_switch")


REVERSIBLE = [p for p in ORDER if p in ROLLBACK_FROM]


@pytest.mark.flows
@pytest.mark.parametrize("phase", REVERSIBLE, ids=str)
def test_rollback_from_every_reversible_phase(prefect_harness: None, make_migration, phase: Phase) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(phase)
    result = rollback(setup.spec_path, setup.control_url, reason=f"drill from {phase}")
    routing = read_routing(setup.store.engine, setup.name)
    kept = WriteMode.OLD_ONLY if phase is Phase.PLANNED else WriteMode.DUAL_OLD_PRIMARY  # never turned on by it
    assert (routing.writes, routing.reads_percent, routing.shadow) == (kept, 0, False)
    assert result["from"] == phase and setup.store.phase(setup.name) is Phase.ROLLED_BACK
    assert setup.store.history(setup.name)[-1].reason == f"drill from {phase}"


@pytest.mark.flows
def test_rollback_is_refused_once_the_old_store_stopped_being_written(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover import cutover as flips
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    flips.stop_old_writes(setup.store.engine, setup.name, "test")
    setup.store.transition(setup.name, Phase.OLD_WRITES_STOPPED, "test")
    with pytest.raises(PhaseError, match="old_writes_stopped"):
        rollback(setup.spec_path, setup.control_url)
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.NEW_ONLY


@pytest.mark.flows
def test_an_application_sees_the_rollback_through_its_flag_client(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    """A running FlagClient (TTL 1 s) picks up the rollback on its own and routes to old. The delay
    from the flip is printed, not asserted (a shared machine stretches it); bench/dualwrite.py
    measures "flip -> client sees it" against the TTL."""
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    ttl = 1.0
    with FlagClient(setup.store.engine, prefix=f"{setup.name}:", ttl=ttl) as client:
        assert client.routing(setup.name).writes is WriteMode.DUAL_NEW_PRIMARY
        seen: list[datetime] = []
        watcher = threading.Thread(target=_watch, args=(client, setup.name, seen), daemon=True)
        watcher.start()
        result = rollback(setup.spec_path, setup.control_url, reason="rollback drill")
        watcher.join(WATCH_SECONDS + 5)
    assert seen, f"the flag client did not see the rollback within {WATCH_SECONDS} s"
    elapsed = (seen[0] - datetime.fromisoformat(str(result["flipped_at"]))).total_seconds()
    print(f"rollback visible to the application {elapsed:.3f} s after the flip (TTL {ttl:g} s)")


def _watch(client: FlagClient, name: str, seen: list[datetime]) -> None:
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        routing = client.routing(name)
        if routing.writes is WriteMode.DUAL_OLD_PRIMARY and routing.reads_percent == 0:
            seen.append(utcnow())
            return
        time.sleep(0.005)


@pytest.mark.flows
def test_after_the_switch_the_old_store_keeps_every_write_so_a_rollback_loses_nothing(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
) -> None:
    """Reverse dual-write: with new primary, the application's writes still reach old."""
    import sqlalchemy as sa

    from shiftover.dualwrite import DualWriter
    from shiftover.flows.cutover import cutover
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.READS_SWITCHED)
    cutover(setup.spec_path, setup.control_url, auto_approve=True)
    m = setup.migration
    with (
        FlagClient(setup.store.engine, prefix=f"{setup.name}:", ttl=0.2) as flags,
        DualWriter(m.source, m.target, m.mapping, flags, setup.store.engine, setup.name) as writer,
    ):
        assert writer.routing().writes is WriteMode.DUAL_NEW_PRIMARY
        writer.update((5,), {"status": "shipped", "note": "after the switch"})
        writer.delete((6,))
    rollback(setup.spec_path, setup.control_url, reason="drill after the switch")
    with m.source.connect() as conn:
        assert conn.execute(sa.text("SELECT status, note FROM orders WHERE id = 5")).one() == (
            "shipped",
            "after the switch",
        )
        assert conn.execute(sa.text("SELECT count(*) FROM orders WHERE id = 6")).scalar() == 0


@pytest.mark.flows
def test_a_mapping_that_cannot_be_reversed_never_switches_writes(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.errors import SpecError
    from shiftover.flows.cutover import cutover

    cols = ["id", "customer_id", "amount", "status", "created_at", "updated_at", {"name": "note", "sql": "upper(note)"}]
    setup: Setup = make_migration(Phase.READS_SWITCHED, columns=cols)
    with pytest.raises(SpecError, match="cannot be written back"):
        cutover(setup.spec_path, setup.control_url, auto_approve=True)
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY


def test_two_rollbacks_at_once_both_end_rolled_back(make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.plan import build_plan, read_state
    from shiftover.rollback import roll_back

    setup: Setup = make_migration(Phase.SHADOW_READING)
    plan, state = build_plan(setup.migration.spec), read_state(setup.store, setup.name)
    barrier, outcomes = threading.Barrier(2), [None, None]

    def operator(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = roll_back(setup.store, plan, state, f"operator-{i}", "twice")  # type: ignore[call-overload]
        except Exception as error:  # reported by the assertion below
            outcomes[i] = error  # type: ignore[call-overload]

    threads = [threading.Thread(target=operator, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(not isinstance(o, Exception) and o is not None for o in outcomes), outcomes
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    routing = read_routing(setup.store.engine, setup.name)
    assert (routing.writes, routing.reads_percent, routing.shadow) == (WriteMode.DUAL_OLD_PRIMARY, 0, False)
