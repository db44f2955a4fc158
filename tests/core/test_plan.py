"""The plan is data: typed stages, listed, explained and folded without a database."""

from __future__ import annotations

from pathlib import Path

from shiftover.flags.routing import Routing, WriteMode
from shiftover.phases import ORDER, Phase
from shiftover.plan import (
    STAGE_TYPES,
    CanaryStep,
    DropStage,
    MigrationState,
    NothingToUndo,
    RoutingFlip,
    build_plan,
    explain,
)
from shiftover.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders.yaml"


def state(phase: Phase, completed: tuple[str, ...] = (), **routing: object) -> MigrationState:
    return MigrationState(phase, 0, Routing(**routing), frozenset(completed))  # type: ignore[arg-type]


def test_plan_order_and_approvals() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    names = [s.name for s in plan]
    assert names[:4] == ["dual_write", "backfill", "validate", "shadow_reads"]
    assert names[-4:] == ["switch_writes", "stop_old_writes", "archive", "drop"]
    assert [s.percent for s in plan if isinstance(s, CanaryStep)] == [1, 10, 50, 100]
    assert [s.name for s in plan if s.needs_approval] == ["switch_writes", "stop_old_writes", "drop"]
    assert plan[-1].reaches is Phase.DECOMMISSIONED and not plan[-1].reversible
    assert plan.flows == ("dual-write", "backfill", "validate", "cutover", "decommission")
    assert {type(s) for s in plan} == set(STAGE_TYPES)


def test_plan_without_shadow_reads_goes_straight_to_canary() -> None:
    spec = parse_spec(
        {
            "name": "m",
            "source": {"url": "sqlite:///a.db", "table": "t"},
            "target": {"url": "sqlite:///b.db", "table": "t"},
            "key": "id",
            "canary": {"steps": [100], "shadow_reads": False},
        }
    )
    plan = build_plan(spec)
    assert "shadow_reads" not in [s.name for s in plan]
    assert [s.reaches for s in plan if isinstance(s, CanaryStep)] == [Phase.READS_SWITCHED]


def test_every_stage_declares_its_inverse_as_data() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    by_name = {s.name: s for s in plan}
    assert by_name["dual_write"].inverse == RoutingFlip(writes=WriteMode.OLD_ONLY)
    assert isinstance(by_name["backfill"].inverse, NothingToUndo)
    assert by_name["reads_10pct"].inverse == RoutingFlip(reads_percent=0)
    assert by_name["switch_writes"].inverse == RoutingFlip(writes=WriteMode.DUAL_OLD_PRIMARY, drain_to_old_first=True)
    assert [s.name for s in plan if s.inverse is None] == ["stop_old_writes", "archive", "drop"]


def test_the_rollback_flip_folds_every_inverse_oldest_last() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    kept = plan.rollback_flip()
    assert kept == RoutingFlip(
        writes=WriteMode.DUAL_OLD_PRIMARY, reads_percent=0, shadow=False, drain_to_old_first=True
    )
    assert plan.rollback_flip(keep_dual_write=False).writes is WriteMode.OLD_ONLY  # dual-write's inverse wins


def test_done_predicates_resume_exactly_where_the_store_says() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    at = [s.name for s in plan.pending(state(Phase.VALIDATED))]
    assert at[0] == "shadow_reads"
    # a canary step is done when its gates passed (recorded), not when the flag merely moved
    mid_soak = state(Phase.READS_CANARY, ("shadow_reads", "reads_1pct"), reads_percent=10.0)
    assert [s.name for s in plan.pending(mid_soak)][:2] == ["reads_10pct", "reads_50pct"]
    assert plan.pending(state(Phase.READS_SWITCHED))[0].name == "switch_writes"
    archived = state(Phase.ARCHIVED)
    assert [s.name for s in plan.pending(archived)] == ["drop"]
    assert plan.finished(state(Phase.DECOMMISSIONED))
    assert not DropStage("drop", Phase.DECOMMISSIONED, "", None).done(archived)
    for phase in ORDER[:-1]:
        assert not plan.finished(state(phase))


def test_stop_after_names_a_stage_or_a_flow() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    names = [s.name for s in plan]
    assert plan.stops_after(names.index("validate"), "validate")
    assert not plan.stops_after(names.index("reads_10pct"), "cutover")
    assert plan.stops_after(names.index("switch_writes"), "cutover")
    assert plan.stops_after(names.index("reads_10pct"), "reads_10pct")


def test_explain_lists_gates_approvals_and_inverses() -> None:
    text = explain(load_spec(EXAMPLE))
    assert "switch_writes" in text and "[APPROVAL]" in text
    assert "[APPROVAL, IRREVERSIBLE]" in text
    assert "gates: checksum, row_count, expectations (during the work)" in text  # repair first
    assert "gates: reconcile_drained, checksum (before the approval and the work)" in text
    assert "undo: queued writes copied new -> old first, writes flag -> dual_old_primary" in text
