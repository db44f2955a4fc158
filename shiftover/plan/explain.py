"""The explainer: the plan as text, walking the same stages the evaluator runs."""

from __future__ import annotations

from typing import Any

from shiftover.connect import redact
from shiftover.plan.build import build_plan
from shiftover.plan.stages import Plan, Stage
from shiftover.spec import MigrationSpec

_WHEN = {"after": "after the work", "before": "before the approval and the work", "within": "during the work"}


def explain(spec: MigrationSpec, plan: Plan | None = None) -> str:
    """The plan as text: one numbered line a stage, its gates and when they run, approvals, inverse."""
    plan = plan or build_plan(spec)
    lines = [
        f"Migration {spec.name}: {spec.source.table} ({redact(spec.source.url)}) -> "
        f"{spec.target.table} ({redact(spec.target.url)})"
    ]
    for i, stage in enumerate(plan, 1):
        lines += explain_stage(i, stage)
    approvers = ", ".join(spec.approvals.approvers) or "anyone"
    signed = " (each signed with their key in approvals.keys)" if spec.approvals.public_keys is not None else ""
    lines.append(f"Approvals by {approvers}{signed}; time-out {spec.approvals.timeout_seconds:g}s fails safe.")
    return "\n".join(lines)


def plan_data(spec: MigrationSpec, plan: Plan | None = None) -> dict[str, Any]:
    """The plan as data (``shiftover plan --json``): the same fields ``explain`` prints."""
    plan = plan or build_plan(spec)
    return {
        "name": spec.name,
        "source": {"url": redact(spec.source.url), "table": spec.source.table},
        "target": {"url": redact(spec.target.url), "table": spec.target.table},
        "stages": [
            {
                "name": stage.name,
                "flow": stage.flow,
                "reaches": str(stage.reaches),
                "does": stage.does,
                "gates": [{"name": g.name, "blocking": g.blocking} for g in stage.gates],
                "gates_run": stage.gates_run,
                "approval": stage.approval.why if stage.approval is not None else None,
                "reversible": stage.reversible,
                "undo": stage.inverse.describe() if stage.inverse else None,
            }
            for stage in plan
        ],
        "approvers": list(spec.approvals.approvers),
        "approval_timeout_seconds": spec.approvals.timeout_seconds,
    }


def explain_stage(i: int, stage: Stage) -> list[str]:
    marks = []
    if stage.needs_approval:
        marks.append("APPROVAL")
    if not stage.reversible:
        marks.append("IRREVERSIBLE")
    head = f"{i:>2}. {stage.name:<16} -> {stage.reaches:<18}" + (f" [{', '.join(marks)}]" if marks else "")
    lines = [head, f"      does: {stage.does}"]
    if stage.gates:
        gates = ", ".join(g.name + ("" if g.blocking else " (warning)") for g in stage.gates)
        lines.append(f"      gates: {gates} ({_WHEN[stage.gates_run]})")
    if stage.approval is not None:
        lines.append(f"      approval: {stage.approval.why}")
    lines.append(f"      undo: {stage.inverse.describe() if stage.inverse else 'cannot be undone'}")
    return lines
