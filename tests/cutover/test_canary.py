"""Issue 5 §1: each gate that watches a canary step flips reads back on its own, records why and
fails the run. The application's traffic is simulated where it really lands: metrics from the
dual-writer's recorder, the reconciliation queue, rows written to the new table."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from shiftover.control import schema
from shiftover.errors import GateError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.metrics import SECONDARY_ERRORS, SECONDARY_WRITES, SHADOW_READS, Recorder
from shiftover.phases import Phase
from shiftover.reconcile import enqueue

from .conftest import Setup

pytestmark = pytest.mark.flows


class Traffic(threading.Thread):
    """Reports what an application would while reads are on the canary: ``report(recorder)`` every 0.1 s."""

    def __init__(self, setup: Setup, report: Callable[[Recorder], None]) -> None:
        super().__init__(daemon=True)
        self.recorder = Recorder(setup.store.engine, setup.name)
        self.report, self.stop = report, threading.Event()
        self.setup = setup

    def run(self) -> None:
        while not self.stop.wait(0.1):
            if read_routing(self.setup.store.engine, self.setup.name).reads_percent > 0:
                self.report(self.recorder)
                self.recorder.flush()


def run_canary(setup: Setup, report: Callable[[Recorder], None] | None = None, soak: float = 1.5) -> GateError:
    from shiftover.flows.cutover import cutover

    traffic = Traffic(setup, report or (lambda r: None))
    traffic.start()
    try:
        with pytest.raises(GateError) as failed:
            cutover(setup.spec_path, setup.control_url, soak_seconds=soak, watch_seconds=0.3)
    finally:
        traffic.stop.set()
        traffic.join()
    return failed.value


def assert_rolled_back(setup: Setup, gate: str) -> dict:
    routing = read_routing(setup.store.engine, setup.name)
    assert routing.reads_percent == 0 and not routing.shadow
    assert routing.writes is WriteMode.DUAL_OLD_PRIMARY  # the new store is still written, ready for a retry
    assert setup.store.phase(setup.name) is Phase.ROLLED_BACK
    [entry] = setup.store.audit_entries(setup.name, action="auto_rollback")
    assert entry["detail"]["gate"] == gate and entry["detail"]["step"] == "reads_50pct"
    assert not setup.store.audit_entries(setup.name, action="write_switch")
    return entry


def test_shadow_mismatches_roll_reads_back(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    """Caught by the watch during the soak, not by the gates at its end: the checksum gate, declared
    first and run only at the step's end, never ran (no clock involved)."""
    setup = make_migration(gates={"canary": ["checksum", {"name": "shadow_mismatch", "threshold": 0.01}]})

    def reads(r: Recorder) -> None:
        r.count(SHADOW_READS, 20)
        r.mismatch((7,), ["amount"], {"amount": "1.00"}, {"amount": "1.10"})

    failed = run_canary(setup, reads, soak=30)
    assert failed.gate == "shadow_mismatch"
    assert [(r.gate, r.passed) for r in gate_results(setup)][-1] == ("shadow_mismatch", False)
    assert "checksum" not in {r.gate for r in gate_results(setup)}, "the failure was caught at the step's end"
    entry = assert_rolled_back(setup, "shadow_mismatch")
    assert "shadow reads differ" in entry["detail"]["summary"]


def gate_results(setup: Setup) -> list[sa.Row]:
    """The canary gate results the control store recorded, in order."""
    t = schema.gate_results
    query = sa.select(t.c.gate, t.c.passed).where(t.c.migration == setup.name, t.c.stage == "canary").order_by(t.c.id)
    with setup.store.engine.connect() as conn:
        return list(conn.execute(query))


def test_secondary_write_errors_roll_reads_back(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(gates={"canary": [{"name": "error_rate", "threshold": 0.05}]})
    failed = run_canary(setup, lambda r: (r.count(SECONDARY_WRITES, 10), r.count(SECONDARY_ERRORS, 2)))
    assert failed.gate == "error_rate"
    assert_rolled_back(setup, "error_rate")


def test_a_reconciliation_backlog_rolls_reads_back(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(gates={"canary": ["reconcile_drained"]})
    failed = run_canary(setup, lambda r: enqueue(setup.store.engine, setup.name, [((3,), "upsert")], "new store down"))
    assert failed.gate == "reconcile_drained"
    assert_rolled_back(setup, "reconcile_drained")


def test_a_recently_changed_row_that_differs_rolls_reads_back(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup = make_migration(gates={"canary": ["checksum"]}, validation={"segments": 2, "repair": False})

    def diverge(_: Recorder) -> None:  # a write that reached the new table wrong, during the step
        with setup.migration.target.begin() as conn:
            conn.execute(
                sa.text("UPDATE orders SET amount = amount + 1, updated_at = :now WHERE id = 11"),
                {"now": datetime.now() + timedelta(hours=1)},
            )

    failed = run_canary(setup, diverge)
    assert failed.gate == "checksum"
    assert_rolled_back(setup, "checksum")
    diff = failed.report[-1]
    assert diff.metrics["differences"] == 1 and diff.rows[0]["key"] in ("(11,)", "[11]", "11")


def test_a_clean_canary_soaks_and_reaches_reads_switched(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.cutover import cutover

    setup = make_migration(gates={"canary": ["reconcile_drained", "shadow_mismatch", "error_rate", "checksum"]})
    traffic = Traffic(setup, lambda r: (r.count(SHADOW_READS, 20), r.count(SECONDARY_WRITES, 20)))
    traffic.start()
    started = datetime.now()
    try:
        result = cutover(setup.spec_path, setup.control_url, soak_seconds=1.0, watch_seconds=0.3, auto_approve=True)
    finally:
        traffic.stop.set()
        traffic.join()
    assert result["phase"] == Phase.WRITES_SWITCHED
    assert (datetime.now() - started).total_seconds() >= 2.0  # two steps, each held for its soak
    phases = [h.phase for h in setup.store.history(setup.name)]
    assert phases[-5:] == [
        Phase.SHADOW_READING,
        Phase.READS_CANARY,
        Phase.READS_CANARY,
        Phase.READS_SWITCHED,
        Phase.WRITES_SWITCHED,
    ]
    gates = {(g["gate"], g["passed"]) for g in _gate_rows(setup)}
    assert gates == {("reconcile_drained", True), ("shadow_mismatch", True), ("error_rate", True), ("checksum", True)}
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.DUAL_NEW_PRIMARY
    # each step keeps its own report in the UI, saying which step, its share and its soak
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from shiftover.story import artifact_key

    for step, percent in (("reads_50pct", 50), ("reads_100pct", 100)):
        key = artifact_key(setup.name, step, "gates")
        with get_client(sync_client=True) as client:
            [report] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        assert f"Canary step `{step}`: {percent}% of reads on the new store, soaked 1 s" in str(report.data)
        assert "rows written during this step" in str(report.data)


def _gate_rows(setup: Setup) -> list[dict]:
    from shiftover.story import last_gate_results

    return [g for g in last_gate_results(setup.store, setup.name, limit=100) if g["stage"] == "canary"]
