"""The lifecycle is a persisted state machine that refuses illegal transitions."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from shiftover.control.store import ControlStore
from shiftover.errors import PhaseError
from shiftover.phases import ORDER, ROLLBACK_FROM, Phase, allowed_next, is_at_least
from shiftover.plan import build_plan
from shiftover.spec import load_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders.yaml"


def test_forward_order_is_walkable() -> None:
    for before, after in pairwise(ORDER):
        assert after in allowed_next(before)


def test_no_skipping_ahead() -> None:
    assert Phase.VALIDATED not in allowed_next(Phase.DUAL_WRITING)
    assert Phase.WRITES_SWITCHED not in allowed_next(Phase.VALIDATED)


def test_rollback_only_from_reversible_phases() -> None:
    """The transition graph allows a rollback exactly before the plan's first irreversible stage."""
    plan = build_plan(load_spec(EXAMPLE))
    assert Phase.ROLLED_BACK in allowed_next(Phase.WRITES_SWITCHED)
    for phase in plan.irreversible_phases:
        assert phase not in ROLLBACK_FROM
        assert Phase.ROLLED_BACK not in allowed_next(phase)
    first = min(ORDER.index(p) for p in plan.irreversible_phases)
    assert set(ORDER[:first]) == ROLLBACK_FROM  # planned too: dual-write flips before entering its phase


def test_approval_before_each_irreversible_or_truth_moving_step() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    assert {Phase.WRITES_SWITCHED, Phase.OLD_WRITES_STOPPED, Phase.DECOMMISSIONED} == plan.approval_phases


def test_is_at_least() -> None:
    assert is_at_least(Phase.VALIDATED, Phase.BACKFILLED)
    assert not is_at_least(Phase.BACKFILLING, Phase.BACKFILLED)
    assert not is_at_least(Phase.ROLLED_BACK, Phase.PLANNED)


def test_store_persists_transitions_and_audits_them(control_store: ControlStore) -> None:
    control_store.register("m", {"name": "m"})
    control_store.transition("m", Phase.DUAL_WRITING, "alice", "go")
    assert control_store.phase("m") is Phase.DUAL_WRITING
    with pytest.raises(PhaseError) as err:
        control_store.transition("m", Phase.WRITES_SWITCHED, "bob")
    assert "is 'dual_writing' and cannot go to 'writes_switched'" in str(err.value)
    assert control_store.phase("m") is Phase.DUAL_WRITING  # nothing changed
    history = control_store.history("m")
    assert [(h.phase, h.actor) for h in history] == [("planned", "shiftover"), ("dual_writing", "alice")]
    assert history[1].reason == "go"
    assert history[1].at.utcoffset() == timedelta(0)  # UTC-aware even where SQLite keeps no zone


def test_register_is_idempotent(control_store: ControlStore) -> None:
    control_store.register("m", {"v": 1})
    control_store.transition("m", Phase.DUAL_WRITING, "alice")
    assert control_store.register("m", {"v": 2}) is Phase.DUAL_WRITING
    assert len(control_store.history("m")) == 2


def test_advance_to_is_idempotent_on_reruns(control_store: ControlStore) -> None:
    control_store.register("m", {})
    assert control_store.advance_to("m", Phase.DUAL_WRITING, "a")
    assert not control_store.advance_to("m", Phase.DUAL_WRITING, "a")


@pytest.mark.parametrize("server", ["pg_database", "mariadb_database"])
def test_control_store_on_database_servers(server: str, request: pytest.FixtureRequest) -> None:
    """The control store's Alembic revisions apply on PostgreSQL and MariaDB too, idempotently."""
    from shiftover.control.store import open_store

    url = request.getfixturevalue(server)()
    store = open_store(url)
    open_store(url)  # a second upgrade is a no-op
    store.register("m", {"name": "m"})
    store.transition("m", Phase.DUAL_WRITING, "alice")
    assert store.phase("m") is Phase.DUAL_WRITING
    assert [h.phase for h in store.history("m")] == ["planned", "dual_writing"]
    assert all(h.at.utcoffset() == timedelta(0) for h in store.history("m"))
