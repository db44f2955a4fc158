"""The plan is data: listed and explained without a database."""

from __future__ import annotations

from pathlib import Path

from shiftover.phases import Phase
from shiftover.plan import build_plan, explain
from shiftover.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders.yaml"


def test_plan_order_and_approvals() -> None:
    plan = build_plan(load_spec(EXAMPLE))
    names = [s.name for s in plan]
    assert names[:4] == ["dual_write", "backfill", "validate", "shadow_reads"]
    assert names[-4:] == ["switch_writes", "stop_old_writes", "archive", "drop"]
    assert [s.percent for s in plan if s.percent] == [1, 10, 50, 100]
    assert [s.name for s in plan if s.needs_approval] == ["switch_writes", "stop_old_writes", "drop"]
    assert plan[-1].reaches is Phase.DECOMMISSIONED and not plan[-1].reversible


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
    assert [s.reaches for s in plan if s.percent] == [Phase.READS_SWITCHED]


def test_explain_lists_gates_and_marks() -> None:
    text = explain(load_spec(EXAMPLE))
    assert "switch_writes" in text and "[APPROVAL]" in text
    assert "[APPROVAL, IRREVERSIBLE]" in text
    assert "gates: row_count, checksum, expectations" in text
