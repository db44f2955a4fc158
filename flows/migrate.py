"""The whole migration, end to end: the evaluator walks the plan in this one top-level run.

Stages run in this run itself (not as subflows), so an approval pauses the run the operator
sees (its Resume button is on the ``migrate`` run). Re-running it resumes: every stage whose
``done`` predicate holds is skipped, and a finished migration returns at once.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from shiftover.control.store import DEFAULT_URL
from shiftover.flows.backfill import MAX_CONCURRENCY
from shiftover.flows.context import RunOptions
from shiftover.flows.evaluate import run_plan


@flow(name="migrate", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY))  # type: ignore[arg-type]
def migrate(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    auto_approve: bool = False,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    soak_seconds: float | None = None,
    retention_seconds: float | None = None,
    flag_ttl_seconds: float = 1.0,
    stop_after: str | None = None,
    restart: bool = False,
    lease_wait_seconds: float = 0.0,
) -> dict[str, object]:
    """Dual-write, backfill, validate, cut over and decommission one table.

    ``stop_after`` names a stage ("validate", "reads_10pct") or a stage flow ("cutover") to stop
    after; ``restart`` starts a rolled-back migration again from dual-write; ``lease_wait_seconds``
    waits that long for another run of the same migration to finish instead of refusing at once.
    """
    options = RunOptions(
        soak_seconds=soak_seconds,
        approval_timeout_seconds=approval_timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        auto_approve=auto_approve,
        flag_ttl_seconds=flag_ttl_seconds,
        retention_seconds=retention_seconds,
        lease_wait_seconds=lease_wait_seconds,
    )
    return run_plan(spec_path, control_url, options, stop_after=stop_after, restart=restart)
