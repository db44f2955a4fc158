"""The explainer: the plan as text, walking the same stages the evaluator runs."""

from __future__ import annotations

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
