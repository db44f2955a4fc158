"""Gate results rendered as Prefect artifacts: one markdown overview per stage, and a table
of evidence per gate (capped, with the total count, so a broken copy cannot flood the UI).

``render_*`` are plain functions (tested without a server); ``publish_gate_results`` sends
them to Prefect and does nothing outside a flow or task run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from shiftover.checks.context import GateResult
from shiftover.story import artifact_key

MAX_ROWS = 50  # evidence rows per table artifact


def plain_rows(rows: Sequence[dict[str, Any]], cap: int = MAX_ROWS) -> list[dict[str, Any]]:
    """The first ``cap`` rows with plain JSON values (no Decimal, datetime or numpy scalars)."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows[:cap]]


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal | datetime | date):
        return str(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    return str(value)


def render_overview(results: Sequence[GateResult], stage: str, migration: str, heading: str = "") -> str:
    """Markdown: one line per gate with its verdict, then each gate's own report."""
    failed = [r for r in results if not r.passed and r.blocking]
    verdict = "**blocked**" if failed else "passed"
    lines = [
        f"# Gates of stage `{stage}` for `{migration}`: {verdict}",
        "",
        *([heading, ""] if heading else []),
        "| gate | verdict | blocking | summary |",
        "|---|---|---|---|",
    ]
    for r in results:
        mark = "pass" if r.passed else ("FAIL" if r.blocking else "warn")
        lines.append(f"| {r.gate} | {mark} | {'yes' if r.blocking else 'no'} | {_cell(r.summary)} |")
    for r in results:
        if r.markdown:
            lines += ["", f"## {r.gate}", "", r.markdown]
    return "\n".join(lines)


def render_evidence(result: GateResult, cap: int = MAX_ROWS) -> tuple[list[dict[str, Any]], str]:
    """A gate's evidence rows (capped) and the artifact description with the total count."""
    total = result.metrics.get("evidence_total", len(result.rows))
    shown = min(cap, len(result.rows))
    more = f" (showing {shown} of {total})" if total > shown else ""
    return plain_rows(result.rows, cap), f"{result.gate}: {result.summary}{more}"


def markdown_table(rows: Sequence[dict[str, Any]], total: int | None = None, cap: int = 20) -> str:
    """A small markdown table of rows (first ``cap``), with 'and N more' when capped."""
    if not rows:
        return ""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows[:cap]]
    total = len(rows) if total is None else total
    if total > min(cap, len(rows)):
        out.append(f"\n… and {total - min(cap, len(rows))} more")
    return "\n".join(out)


def _cell(value: Any) -> str:
    return str(_plain(value)).replace("|", "\\|").replace("\n", " ")


def publish_gate_results(results: list[GateResult], stage: str, migration: str, heading: str = "") -> None:
    """Publish the stage overview (markdown) and one evidence table per gate that has rows."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        markdown=render_overview(results, stage, migration, heading),
        key=artifact_key(migration, stage, "gates"),
        description=f"gates of {stage} for {migration}" + (f": {heading}" if heading else ""),
    )
    for result in results:
        if result.rows:
            rows, description = render_evidence(result)
            create_table_artifact(table=rows, key=artifact_key(migration, stage, result.gate), description=description)
