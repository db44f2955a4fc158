"""The rehearsal as a Prefect task, so its findings show in the run (it writes nothing, so no retries)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from shiftover.migration import Migration
from shiftover.rehearsal import RehearsalReport, rehearse


@task(name="rehearsal", cache_policy=NO_CACHE)
def rehearse_copy(migration: Migration, restarted: bool) -> RehearsalReport:
    """Rehearse the copy of a sample (rolled back); the report is logged and published either way."""
    m = migration
    report = rehearse(m.spec, m.mapping, m.source, m.target, restarted=restarted)
    lines = [f"- `{f.field}`: {f.problem}" for f in report.findings] or ["- no problems found"]
    notes = [f"- note: {n}" for n in report.notes]
    create_markdown_artifact(
        "\n".join([f"## Rehearsal of `{m.name}`: {report.rows} rows in {report.seconds:.2f} s", "", *lines, *notes]),
        description="rows pushed through the mapping, transform and writer, then rolled back",
    )
    get_run_logger().info(
        "rehearsal of %s: %d rows in %.2f s, %d finding(s)", m.name, report.rows, report.seconds, len(report.findings)
    )
    return report
