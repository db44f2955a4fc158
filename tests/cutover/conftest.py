"""A migration set up to a given phase on SQLite databases (fast), for the cutover flows.

The setup walks the real lifecycle (every transition audited) and sets the flags each phase
would have; the backfill is ``sync_keys`` (tested elsewhere) and the validation a real
checksum gate, so the write fence finds a clean last diff.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from flow_runs import Background, paused_run, run_state  # noqa: F401 (the cutover and schema tests import them from here)

from shiftover import cutover as flips
from shiftover.checks.gate import GateContext, run_gates
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.demo import create_orders, orders_table
from shiftover.mapping import forget_reflections
from shiftover.migration import Migration, load_migration
from shiftover.phases import ORDER, Phase
from shiftover.rowsync import sync_keys
from shiftover.spec import GateSpec

ROWS = 200
ACTOR = "test"


@dataclass
class Setup:
    spec_path: str
    control_url: str
    migration: Migration
    tmp: Path

    @property
    def store(self) -> ControlStore:
        return self.migration.store

    @property
    def name(self) -> str:
        return self.migration.name


def write_spec(tmp: Path, name: str, **over: Any) -> Path:
    data: dict[str, Any] = {
        "name": name,
        "source": {"url": f"sqlite:///{tmp}/old.db", "table": "orders"},
        "target": {"url": f"sqlite:///{tmp}/new.db", "table": "orders"},
        "key": ["id"],
        "validation": {"segments": 2},
        "canary": {"steps": [50, 100], "soak_seconds": 0},
        "gates": {"canary": [], "switch_writes": ["reconcile_drained", "checksum"]},
        "approvals": {"timeout_seconds": 30},
    }
    data.update(over)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def advance(migration: Migration, phase: Phase) -> None:
    """Walk the lifecycle up to ``phase``, setting the flags each phase has."""
    store, name, engine = migration.store, migration.name, migration.store.engine
    for step in ORDER[ORDER.index(store.phase(name)) + 1 : ORDER.index(phase) + 1]:
        if step is Phase.DUAL_WRITING:
            flips.enable_dual_write(engine, name, ACTOR)
        if step is Phase.VALIDATED:
            run_gates(GateContext(migration, "validate"), (GateSpec(name="checksum"),))
        if step is Phase.SHADOW_READING:
            flips.start_shadow_reads(engine, name, ACTOR)
        if step is Phase.READS_CANARY:
            flips.move_reads(engine, name, 50, ACTOR)
        if step is Phase.READS_SWITCHED:
            flips.move_reads(engine, name, 100, ACTOR)
        if step is Phase.WRITES_SWITCHED:
            flips.switch_writes(engine, name, ACTOR)
        store.transition(name, step, ACTOR, "test setup")


@pytest.fixture
def make_migration(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """``make_migration(phase, **spec_overrides)``: old and new orders tables in sync, at ``phase``
    (at ``planned``, the new table is empty: no run has copied anything yet)."""
    counter = iter(range(100))

    def make(
        phase: Phase = Phase.VALIDATED, name: str = "orders-cut", control_url: str | None = None, **over: Any
    ) -> Setup:
        tmp = tmp_path / f"m{next(counter)}"
        tmp.mkdir()
        spec_path = write_spec(tmp, name, **over)
        old, new = get_engine(f"sqlite:///{tmp}/old.db"), get_engine(f"sqlite:///{tmp}/new.db")
        create_orders(old, rows=ROWS)
        orders_table().create(new)
        control_url = control_url or f"sqlite:///{tmp}/control.db"
        migration = load_migration(str(spec_path), control_url)
        if phase is not Phase.PLANNED:  # a planned migration's new table is empty (the rehearsal refuses rows)
            sync_keys(old, new, migration.mapping, [(i,) for i in range(1, ROWS + 1)])
        advance(migration, phase)
        return Setup(str(spec_path), control_url, migration, tmp)

    yield make
    forget_reflections()


class Approver(threading.Thread):
    """The person at the UI: waits for the pause, then submits each answer in turn.

    ``outcomes`` records, per answer, ``"accepted"`` or the error the server raised, and the
    run's state right after it.
    """

    def __init__(self, flow_name: str, answers: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.flow_name, self.answers = flow_name, answers
        self.outcomes: list[tuple[str, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from prefect.flow_runs import resume_flow_run

        try:
            run_id = paused_run(self.flow_name)
            for answer in self.answers:
                try:
                    resume_flow_run(run_id, run_input=answer)
                    verdict = "accepted"
                except Exception as exc:
                    verdict = f"refused: {exc}"
                self.outcomes.append((verdict, run_state(run_id)))
        except BaseException as exc:
            self.error = exc
