"""Stage 3, validate: prove the copy equal before any read moves: the checksum diff with repair
from the old store, row parity and the expectations (the default ones in SQL, the spec's own in
Great Expectations). A failing blocking gate fails the flow with its report (artifacts) and the
migration stays ``backfilled``: no later stage runs.
Undo: nothing (repairs only made the new store equal to the old one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger

from shiftover.checks.data import queued_keys
from shiftover.checks.gate import DiffScope, GateContext, GateResult
from shiftover.checks.report import publish_gate_results
from shiftover.control.store import DEFAULT_URL
from shiftover.errors import GateError, SpecError
from shiftover.flows.context import RunContext, RunOptions
from shiftover.flows.diff_worker import DiffChildRuns
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.plan import ValidateStage
from shiftover.tasks.validate import run_validation_gate


@flow(name="validate")
def validate(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    since: str | None = None,
    keys_from_queue: bool = False,
) -> dict[str, Any]:
    """Run the spec's validate gates; the migration becomes ``validated`` only when none blocks.

    ``since`` (ISO time) limits the checksum diff to rows updated since then;
    ``keys_from_queue`` limits it to the keys the reconciliation queue has touched.
    """
    options = RunOptions(since=parse_since(since), keys_from_queue=keys_from_queue)
    return run_plan(spec_path, control_url, options, flows={"validate"})


def run_validate(ctx: RunContext, stage: ValidateStage) -> Outcome:
    """Each gate in order; the first blocking failure publishes the report and raises ``GateError``."""
    m = ctx.migration
    keys = queued_keys(m) if ctx.options.keys_from_queue else None
    gate_ctx = GateContext(
        m,
        stage.gate_section or "validate",
        DiffScope(since=ctx.options.since, keys=keys),
        ctx.actor,
        diff_workers=_diff_child_runs(ctx),
    )
    results: list[GateResult] = []
    for gate_spec in stage.gates:
        result = run_validation_gate(gate_ctx, gate_spec)
        results.append(result)
        if result.blocking and not result.passed:
            publish_gate_results(results, gate_ctx.stage, m.name)
            raise GateError(result.gate, result.summary, report=results)
    publish_gate_results(results, gate_ctx.stage, m.name)
    reason = "; ".join(f"{r.gate}: {r.summary}" for r in results) or "no gates declared"
    get_run_logger().info("validation of %s: %s", m.name, reason)
    gates = [{"gate": r.gate, "passed": r.passed, "blocking": r.blocking, "summary": r.summary} for r in results]
    return Outcome(True, reason, {"gates": gates})


def _diff_child_runs(ctx: RunContext) -> DiffChildRuns | None:
    """The runner of the diff's workers as Prefect child runs, when the spec asks for them."""
    dist = ctx.migration.spec.validation.distributed
    if dist is None or dist.mode != "deployment" or not (ctx.options.spec_path and ctx.options.control_url):
        return None  # without a runner the diff refuses mode deployment, naming the field
    return DiffChildRuns(ctx.options.spec_path, ctx.options.control_url)


def parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        return datetime.fromisoformat(since)
    except ValueError:
        raise SpecError("since", f"not an ISO date or time: {since!r}") from None
