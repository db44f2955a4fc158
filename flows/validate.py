"""Stage 3, validate: prove the copy equal before any read moves: the checksum diff with repair
from the old store, row parity and the expectations (the default ones in SQL, the spec's own in
Great Expectations). A failing blocking gate fails the flow with its report (artifacts) and the
migration stays ``backfilled``: no later stage runs.
Undo: nothing (repairs only made the new store equal to the old one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from shiftover.checks.data import queued_keys
from shiftover.checks.gate import DiffScope, GateContext, GateResult
from shiftover.checks.report import publish_gate_results
from shiftover.control.store import DEFAULT_URL
from shiftover.diff.dask_workers import DaskDiffLoops
from shiftover.diff.distributed import DiffRunProgress, WorkerRunner
from shiftover.errors import GateError, SpecError
from shiftover.flows.context import RunContext, RunOptions
from shiftover.flows.diff_worker import DiffChildRuns
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.plan import ValidateStage
from shiftover.story import artifact_key
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
        diff_workers=_diff_runner(ctx, stage),
        diff_tick=DiffProgressArtifact(m.name) if m.spec.validation.distributed else None,
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


def _diff_runner(ctx: RunContext, stage: ValidateStage) -> WorkerRunner | None:
    """The runner of the diff's workers: Prefect child runs (mode ``deployment``), or loops on the
    Dask cluster given the control URL as this run got it (a ``${NAME}`` stays a reference).
    Without one the diff runs local processes, or refuses mode ``deployment`` naming the field."""
    dist, url = ctx.migration.spec.validation.distributed, ctx.options.control_url
    if dist is not None and dist.mode == "dask" and any(g.name == "checksum" for g in stage.gates):
        logger = get_run_logger()
        loops = DaskDiffLoops(url, log=lambda line: logger.info("diff of %s: %s", ctx.migration.name, line))
        loops.check(dist)  # a missing package, bad address or silent scheduler: refused before any gate
        return loops
    if dist is None or dist.mode != "deployment" or not (ctx.options.spec_path and url):
        return None  # without a runner the diff refuses mode deployment, naming the field
    return DiffChildRuns(ctx.options.spec_path, url)


class DiffProgressArtifact:
    """The live progress artifact of a distributed diff: created at its first tick, updated after."""

    def __init__(self, migration: str) -> None:
        self.key = artifact_key("diff", migration, "progress")
        self.description = f"validation diff of {migration}"
        self.artifact_id: Any = None

    def __call__(self, progress: DiffRunProgress) -> None:
        line = f"{self.description}, run {progress.run_id}: {progress.describe()}"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress.percent, key=self.key, description=line)
        else:
            update_progress_artifact(self.artifact_id, progress.percent, description=line)


def parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        return datetime.fromisoformat(since)
    except ValueError:
        raise SpecError("since", f"not an ISO date or time: {since!r}") from None
