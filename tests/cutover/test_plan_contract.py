"""The plan is the program (issue 10): what the plan declares is what runs, a re-run resumes from
every phase, one run holds a migration, and a rollback wins every race with a stage.

Races are ordered by events (a paused run, a flag that moved), never by sleeping and hoping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.control import schema
from shiftover.control.lease import read_lease
from shiftover.demo.run import count_differences
from shiftover.errors import LeaseHeldError, LeaseLostError, StaleApprovalError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.migration import load_migration
from shiftover.phases import ORDER, Phase
from shiftover.plan import build_plan

from .conftest import Approver, Background, Setup, paused_run, run_state

pytestmark = pytest.mark.flows

GOOD = {"approver": "alice", "confirm_name": "orders-cut", "reason": "gates green"}
ALL_GATES = {
    "backfill": ["row_count"],
    "validate": ["checksum", "row_count"],
    "canary": ["reconcile_drained", "checksum"],
    "switch_writes": ["reconcile_drained", "checksum"],
    "decommission": ["reconcile_drained"],
}


def migrate(setup: Setup, **kw: Any) -> dict[str, Any]:
    from shiftover.flows.migrate import migrate as flow

    defaults: dict[str, Any] = {
        "poll_interval_seconds": 1,
        "approval_timeout_seconds": 30,
        "flag_ttl_seconds": 0.1,
        "retention_seconds": 0,
    }
    return flow(setup.spec_path, setup.control_url, **{**defaults, **kw})


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def control(request: pytest.FixtureRequest) -> str | None:
    """The control store kind: SQLite (None: the setup's own file) or a PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database")()


def test_each_declared_gate_and_approval_runs_exactly_where_the_plan_says(
    prefect_harness: None, make_migration
) -> None:  # type: ignore[no-untyped-def]
    setup: Setup = make_migration(Phase.DUAL_WRITING, gates=ALL_GATES)
    plan = build_plan(setup.migration.spec)
    migrate(setup, auto_approve=True)
    assert setup.store.phase(setup.name) is Phase.DECOMMISSIONED
    with setup.store.engine.connect() as conn:
        gates = [
            (r.stage, r.gate) for r in conn.execute(sa.select(schema.gate_results).order_by(schema.gate_results.c.id))
        ]
    entries = setup.store.audit_entries(setup.name)
    done = [e["detail"]["stage"] for e in entries if e["action"] == "stage"]
    assert done == [s.name for s in plan if s.name != "dual_write"]  # dual-write was set up before the run
    for stage in plan:
        if stage.gate_section is None:
            continue
        declared = [g.name for g in stage.gates]
        ran = [g for s, g in gates if s == stage.gate_section]
        runs = len([s for s in plan if s.gate_section == stage.gate_section])
        assert ran[: len(declared)] == declared and len(ran) >= runs * len(declared), (stage.name, ran)
    approvals = [e["detail"]["step"] for e in entries if e["action"] == "approval"]
    assert approvals == [s.name for s in plan if s.needs_approval]
    # the write switch's gates ran before its approval, which came before the switch itself
    order = [e["action"] for e in entries]
    switch_approval = next(i for i, e in enumerate(entries) if e["action"] == "approval")
    assert order.index("write_switch") > switch_approval
    assert setup.store.phase(setup.name) is Phase.DECOMMISSIONED


@pytest.mark.parametrize("phase", [p for p in ORDER if p is not Phase.DECOMMISSIONED], ids=str)
def test_migrate_resumes_from_every_phase_with_a_zero_diff(prefect_harness: None, make_migration, phase: Phase) -> None:  # type: ignore[no-untyped-def]
    setup: Setup = make_migration(phase)
    if phase is Phase.ARCHIVED:  # the setup walks phases; archiving also renames the old table
        from shiftover.decommission import rename_table

        rename_table(setup.migration.source, "orders", "orders_shiftover_archive")
    result = migrate(setup, auto_approve=True, stop_after="switch_writes")
    if ORDER.index(phase) < ORDER.index(Phase.WRITES_SWITCHED):
        assert result["ran"] and result["phase"] == Phase.WRITES_SWITCHED
        assert not set(result["ran"]) & {"backfill", "validate"} or ORDER.index(phase) < ORDER.index(Phase.VALIDATED)
        assert count_differences(load_migration(setup.spec_path, setup.control_url)) == 0
    final = migrate(setup, auto_approve=True)
    assert final["phase"] == Phase.DECOMMISSIONED
    again = migrate(setup, auto_approve=True)
    assert again["note"].startswith("nothing left to do") and again["phase"] == Phase.DECOMMISSIONED


def test_a_finished_migration_is_answered_by_the_cli_in_seconds(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from shiftover.cli import app

    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    migrate(setup, auto_approve=True)
    started = time.monotonic()
    out = CliRunner().invoke(app, ["run", setup.spec_path, "--auto-approve", "--control-url", setup.control_url])
    seconds = time.monotonic() - started
    assert out.exit_code == 0 and "nothing left to do" in out.output, out.output
    print(f"shiftover run on a finished migration: {seconds:.2f} s")


def test_a_second_run_is_refused_with_the_holders_run_id_or_waits_for_it(
    prefect_harness: None,
    make_migration,
    control: str | None,  # type: ignore[no-untyped-def]
) -> None:
    setup: Setup = make_migration(Phase.READS_SWITCHED, control_url=control)
    first = Background(lambda: migrate(setup, stop_after="switch_writes"))
    first.start()
    run_id = paused_run("migrate")  # the first run holds the lease while it waits for its approval
    holder = read_lease(setup.store.engine, setup.name).holder
    assert holder == f"flow-run/{run_id}"
    with pytest.raises(LeaseHeldError, match=str(run_id)):
        migrate(setup, auto_approve=True, stop_after="switch_writes")
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY  # nothing moved
    waiter = Background(lambda: migrate(setup, auto_approve=True, lease_wait_seconds=60, stop_after="switch_writes"))
    waiter.start()
    Approver("migrate", [GOOD]).run()
    first.join(30)
    waiter.join(30)
    assert first.error is None and first.result["phase"] == Phase.WRITES_SWITCHED
    assert waiter.error is None and waiter.result["ran"] == [], waiter.result  # it waited, then found it done
    assert [a["actor"] for a in setup.store.audit_entries(setup.name, action="approval")] == ["alice"]


def test_an_approval_pending_at_a_rollback_can_never_switch_writes(
    prefect_harness: None,
    make_migration,
    control: str | None,  # type: ignore[no-untyped-def]
) -> None:
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.READS_SWITCHED, control_url=control)
    run = Background(lambda: migrate(setup, stop_after="switch_writes"))
    run.start()
    run_id = paused_run("migrate")
    rollback(setup.spec_path, setup.control_url, reason="drill while an approval waits")
    run.join(30)
    assert isinstance(run.error, StaleApprovalError), run.error
    # the pause is closed: the operator's late answer is refused by the server
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    with pytest.raises(NotPausedError):
        resume_flow_run(run_id, run_input=GOOD)
    assert run_state(run_id) != "PAUSED"
    routing = read_routing(setup.store.engine, setup.name)
    assert (routing.writes, routing.reads_percent) == (WriteMode.DUAL_OLD_PRIMARY, 0)
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    assert not setup.store.audit_entries(setup.name, action="approval")
    assert not setup.store.audit_entries(setup.name, action="write_switch")
    with setup.store.engine.connect() as conn:
        states = conn.execute(sa.select(schema.approval_requests.c.state)).scalars().all()
    assert states == ["cancelled"]
    # a second rollback says so and changes nothing
    assert rollback(setup.spec_path, setup.control_url)["note"] == "already rolled back"


def test_a_rollback_during_a_canary_soak_stops_the_run_before_its_next_flip(
    prefect_harness: None, make_migration
) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.cutover import cutover
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.SHADOW_READING, canary={"steps": [50, 100], "soak_seconds": 60})
    run = Background(lambda: cutover(setup.spec_path, setup.control_url, watch_seconds=0.2, auto_approve=True))
    run.start()
    wait_until(lambda: read_routing(setup.store.engine, setup.name).reads_percent == 50)
    rollback(setup.spec_path, setup.control_url, reason="drill during the soak")
    run.join(15)  # long before the 60 s soak would end
    assert not run.is_alive() and isinstance(run.error, LeaseLostError), run.error
    entries = setup.store.audit_entries(setup.name)
    started = next(i for i, e in enumerate(entries) if e["action"] == "rollback_started")
    later_flips = [e for e in entries[started:] if e["action"] == "flag" and "cutover" in e["actor"]]
    assert later_flips == []
    routing = read_routing(setup.store.engine, setup.name)
    assert (routing.writes, routing.reads_percent, routing.shadow) == (WriteMode.DUAL_OLD_PRIMARY, 0, False)
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK


def test_a_rolled_back_migration_says_how_to_go_on_and_restarts_when_asked(
    prefect_harness: None, make_migration
) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.rollback import rollback

    setup: Setup = make_migration(Phase.READS_CANARY)
    rollback(setup.spec_path, setup.control_url, reason="drill")
    told = migrate(setup, auto_approve=True)
    assert told["phase"] == Phase.ROLLED_BACK and "--restart" in told["note"]
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    again = migrate(setup, auto_approve=True, restart=True, stop_after="validate")
    assert again["ran"] == ["dual_write", "backfill", "validate"] and again["phase"] == Phase.VALIDATED
    assert count_differences(load_migration(setup.spec_path, setup.control_url)) == 0


def test_a_rollback_after_the_switch_never_loses_a_write_only_the_new_store_holds(
    prefect_harness: None,
    make_migration,  # type: ignore[no-untyped-def]
) -> None:
    """Writes switched; the old store refuses writes for a while, so 100 application writes are held
    by the new store alone. A rollback refuses (naming them) until they can be copied, then copies them
    before the flip. Old and new are then compared row for row with plain SQL, not Shiftover's diff."""
    import random

    from shiftover.demo.orders import order_row
    from shiftover.dualwrite import DualWriter
    from shiftover.errors import RollbackRefusedError
    from shiftover.flags.client import FlagClient
    from shiftover.flows.rollback import rollback
    from shiftover.reconcile import pending_by_direction

    from .conftest import ROWS

    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    m, rng = setup.migration, random.Random(7)
    read_only = [
        f"CREATE TRIGGER refuse_{op} BEFORE {op} ON orders BEGIN SELECT RAISE(ABORT, 'read-only'); END"
        for op in ("INSERT", "UPDATE", "DELETE")
    ]
    with m.source.begin() as conn:  # the old store refuses writes for a while
        for ddl in read_only:
            conn.execute(sa.text(ddl))
    with (
        FlagClient(setup.store.engine, prefix=f"{setup.name}:", ttl=0.2) as flags,
        DualWriter(m.source, m.target, m.mapping, flags, setup.store.engine, setup.name) as writer,
    ):
        for i in range(1, 51):
            writer.update((i,), {"status": "paid", "note": f"after the switch {i}"})
        for i in range(ROWS + 1, ROWS + 51):
            writer.insert(order_row(i, rng))
    assert pending_by_direction(setup.store.engine, setup.name) == {"new->old": 100}

    with pytest.raises(RollbackRefusedError, match=r"100 write\(s\) only the new store holds"):
        rollback(setup.spec_path, setup.control_url, reason="drill with the old store read-only")
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_NEW_PRIMARY  # nothing flipped
    assert setup.store.phase(setup.name) is Phase.WRITES_SWITCHED

    with m.source.begin() as conn:  # the old store takes writes again
        for op in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(sa.text(f"DROP TRIGGER refuse_{op}"))
    result = rollback(setup.spec_path, setup.control_url, reason="drill, old store back")
    assert result["drained_to_old"] == 100 and setup.store.phase(setup.name) is Phase.ROLLED_BACK
    assert "100 copied key(s) re-checked: 0 differ" in result["note"]  # the rollback's own scoped diff
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY
    query = sa.text(
        "SELECT id, customer_id, CAST(amount AS TEXT), status, note, created_at, updated_at FROM orders ORDER BY id"
    )
    with m.source.connect() as old, m.target.connect() as new:
        old_rows, new_rows = old.execute(query).all(), new.execute(query).all()
    assert len(old_rows) == ROWS + 50 and old_rows == new_rows
    assert pending_by_direction(setup.store.engine, setup.name) == {}


@pytest.mark.parametrize("racing", ["dual_write", "backfill"])
def test_a_rollback_racing_a_stage_wins_and_the_run_changes_nothing_after_it(
    prefect_harness: None,
    make_migration,
    racing: str,  # type: ignore[no-untyped-def]
) -> None:
    """The rollback lands while the run is inside a stage (dual-write's wait for the flag TTLs, or a
    throttled backfill); the run's next fenced write fails, so nothing it does after the rollback
    moves the migration."""
    from shiftover.flows.rollback import rollback

    if racing == "dual_write":
        setup: Setup = make_migration(Phase.PLANNED)
        run = Background(lambda: migrate(setup, auto_approve=True, flag_ttl_seconds=6))
        inside = lambda: read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_OLD_PRIMARY  # noqa: E731
    else:
        # 180 rows at 5 rows/s: the backfill lasts 36 s, so the rollback (a second or two) lands inside it
        # however loaded the machine; the run stops at its next chunk once the fence is up.
        setup = make_migration(Phase.DUAL_WRITING, backfill={"chunk_rows": 5, "max_rows_per_second": 5})
        with setup.migration.target.begin() as conn:  # history still to copy
            conn.execute(sa.text("DELETE FROM orders WHERE id > 20"))
        run = Background(lambda: migrate(setup, auto_approve=True))
        inside = lambda: setup.store.phase(setup.name) is Phase.BACKFILLING  # noqa: E731
    run.start()
    wait_until(inside)
    rollback(setup.spec_path, setup.control_url, reason=f"drill during {racing}")
    run.join(60)
    assert not run.is_alive() and isinstance(run.error, LeaseLostError), run.error
    entries = setup.store.audit_entries(setup.name)
    started = next(i for i, e in enumerate(entries) if e["action"] == "rollback_started")
    by_run = [e for e in entries[started:] if "migrate" in e["actor"] and e["action"] in ("flag", "phase", "stage")]
    assert by_run == []
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    routing = read_routing(setup.store.engine, setup.name)
    assert (routing.writes, routing.reads_percent) == (WriteMode.DUAL_OLD_PRIMARY, 0)


def test_a_later_stage_or_a_rollback_never_starts_a_migration_in_another_store(
    prefect_harness: None, make_migration, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A stage flow or a rollback pointed at a store the migration never ran against is refused,
    naming the first stage; it used to register a new `planned` migration there, silently."""
    from shiftover.control.store import open_store
    from shiftover.errors import ControlStoreError
    from shiftover.flows.rollback import rollback
    from shiftover.flows.validate import validate

    setup = make_migration(Phase.BACKFILLED)
    other = f"sqlite:///{tmp_path}/other-control.db"
    for run in (lambda: validate(setup.spec_path, other), lambda: rollback(setup.spec_path, other)):
        with pytest.raises(
            ControlStoreError,
            match="no migration 'orders-cut' in the control store .*first stage "
            r"\(dual_write, run by the 'dual-write' or 'migrate' flow\)",
        ):
            run()
    assert not open_store(other).has_migration("orders-cut")
    assert setup.store.phase("orders-cut") is Phase.BACKFILLED  # its own store untouched
