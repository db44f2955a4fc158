"""The whole migration, end to end: walks the plan and runs each stage's flow as a subflow.

Re-running it resumes: every stage flow skips what the control store says is done.
"""

from __future__ import annotations

from prefect import flow

from flows.backfill import backfill
from flows.cutover import cutover
from flows.decommission import decommission
from flows.dual_write import dual_write
from flows.validate import validate
from shiftover.control.store import DEFAULT_URL, open_store
from shiftover.plan import build_plan
from shiftover.spec import MigrationSpec, load_spec
from shiftover.story import publish_story


@flow(name="migrate")
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
) -> dict[str, object]:
    """Dual-write, backfill, validate, cut over and decommission one table.

    ``stop_after`` names a stage flow ("backfill", "validate", "cutover", ...) to stop after.
    """
    spec = load_spec(spec_path)
    stage_flows = check_stop_after(spec, stop_after)
    runners = {
        "dual-write": lambda: dual_write(spec_path, control_url, flag_ttl_seconds=flag_ttl_seconds),
        "backfill": lambda: backfill(spec_path, control_url),
        "validate": lambda: validate(spec_path, control_url),
        "cutover": lambda: cutover(
            spec_path,
            control_url,
            soak_seconds=soak_seconds,
            auto_approve=auto_approve,
            approval_timeout_seconds=approval_timeout_seconds,
            poll_interval_seconds=poll_interval_seconds,
        ),
        "decommission": lambda: decommission(
            spec_path,
            control_url,
            retention_seconds=retention_seconds,
            auto_approve=auto_approve,
            approval_timeout_seconds=approval_timeout_seconds,
            poll_interval_seconds=poll_interval_seconds,
        ),
    }
    results: dict[str, object] = {}
    try:
        for flow_name in stage_flows:
            results[flow_name] = runners[flow_name]()
            if flow_name == stop_after:
                break
    finally:
        publish_story(open_store(control_url), spec)
    return results


def check_stop_after(spec: MigrationSpec, stop_after: str | None) -> list[str]:
    """The plan's stage flows in order; ``ValueError`` when ``stop_after`` is none of them."""
    stage_flows = list(dict.fromkeys(s.flow for s in build_plan(spec)))
    if stop_after is not None and stop_after not in stage_flows:
        raise ValueError(f"stop_after={stop_after!r} is not a stage flow; use one of {', '.join(stage_flows)}")
    return stage_flows
