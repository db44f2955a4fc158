"""A migration's story for people: plan, phase timeline and gate results as markdown,
published as a Prefect artifact (``shiftover status`` shows its last gate results)."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from shiftover.control import schema
from shiftover.control.store import ControlStore
from shiftover.plan import explain
from shiftover.spec import MigrationSpec


def last_gate_results(store: ControlStore, migration: str, limit: int = 20) -> list[dict[str, Any]]:
    t = schema.gate_results
    query = (
        sa.select(t.c.at, t.c.stage, t.c.gate, t.c.passed, t.c.blocking, t.c.summary)
        .where(t.c.migration == migration)
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)][::-1]


def render_story(store: ControlStore, spec: MigrationSpec) -> str:
    """Markdown: the plan, every phase change with who and when, and the latest gate results."""
    lines = [
        f"# Migration `{spec.name}`",
        "",
        f"Phase now: **{store.phase(spec.name)}**",
        "",
        "## Timeline",
        "",
        "| when (UTC) | phase | from | who | why |",
        "|---|---|---|---|---|",
    ]
    for change in store.history(spec.name):
        lines.append(
            f"| {change.at:%Y-%m-%d %H:%M:%S} | {change.phase} | {change.previous or ''} | "
            f"{change.actor} | {change.reason} |"
        )
    approvals = store.audit_entries(spec.name, action="approval")
    if approvals:
        lines += ["", "## Approvals", "", "| when | step | approver | reason |", "|---|---|---|---|"]
        for a in approvals:
            d = a["detail"]
            lines.append(f"| {a['at']:%H:%M:%S} | {d['step']} | {d['approver']} | {d.get('reason', '')} |")
    gates = last_gate_results(store, spec.name)
    if gates:
        lines += ["", "## Gates", "", "| when | stage | gate | result | summary |", "|---|---|---|---|---|"]
        for g in gates:
            verdict = "passed" if g["passed"] else ("FAILED" if g["blocking"] else "warning")
            lines.append(f"| {g['at']:%H:%M:%S} | {g['stage']} | {g['gate']} | {verdict} | {g['summary']} |")
    lines += ["", "## Plan", "", "```", explain(spec), "```"]
    return "\n".join(lines)


def render_picture(store: ControlStore, spec: MigrationSpec) -> str:
    """The timeline picture as a markdown image (a PNG data URI), or a note why there is none."""
    from shiftover.timeline import png_data_uri, read_timeline, render_png

    timeline = read_timeline(store, spec.name)
    try:
        png = render_png(timeline)
    except ImportError:
        return "_(install matplotlib for the timeline picture)_"
    return f"![timeline of {spec.name}]({png_data_uri(png)})"


def validation_failures(store: ControlStore, migration: str, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rows the diff found different (for a table artifact), plain values only."""
    t = schema.validation_failures
    query = (
        sa.select(t.c.found_at, t.c.key_json, t.c.kind, t.c.columns, t.c.repaired_at)
        .where(t.c.migration == migration)
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [
            {
                "found_at": str(r.found_at),
                "key": r.key_json,
                "kind": r.kind,
                "columns": ", ".join(r.columns or []),
                "repaired": r.repaired_at is not None,
            }
            for r in conn.execute(query)
        ]


def routing_history(store: ControlStore, migration: str) -> list[dict[str, Any]]:
    """Where reads and writes went after every flag change (a table artifact): the audit log's flag
    entries replayed in order, each row the whole routing after that change."""
    writes, reads, shadow = "old_only", 0.0, False
    rows = []
    for entry in store.audit_entries(migration, action="flag"):
        detail = entry["detail"] or {}
        flag, value = str(detail.get("flag", "")), detail.get("value")
        if flag.endswith(":writes"):
            writes = str(value)
        elif flag.endswith(":reads_percent"):
            reads = float(value or 0)
        elif flag.endswith(":shadow"):
            shadow = bool(value)
        else:
            continue
        rows.append(
            {
                "at": f"{entry['at']:%Y-%m-%d %H:%M:%S}",
                "changed": flag.partition(":")[2],
                "writes": writes,
                "reads_new_percent": 100.0 if writes == "new_only" else reads,
                "shadow": shadow,
                "by": entry["actor"],
                "why": detail.get("reason", ""),
            }
        )
    return rows


def artifact_key(*parts: str) -> str:
    """A Prefect artifact or pause key from ``parts``: lowercase letters, digits and single dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")[:100]
