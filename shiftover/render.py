"""Rich renderings for a terminal: ``shiftover plan`` as a tree, ``shiftover status`` as tables.

They draw the same data ``plan --json`` and ``status --json`` print (``plan_data``, ``status_data``),
so the three views cannot disagree. The CLI uses them when its output is a terminal; piped output
stays the plain text of ``explain`` and ``render_status``, which scripts and logs read.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

_WHEN = {"after": "after the work", "before": "before the approval and the work", "within": "during the work"}


def plan_tree(data: dict[str, Any]) -> Tree:
    """The plan: one branch a stage (what it reaches, its gates, approval and undo)."""
    source, target = data["source"], data["target"]
    moves = f": {source['table']} ({source['url']}) -> {target['table']} ({target['url']})"
    root = Tree(Text.assemble(("Migration ", "bold"), (data["name"], "bold cyan"), moves))
    for i, stage in enumerate(data["stages"], 1):
        head = Text.assemble((f"{i:>2}. ", "dim"), (stage["name"], "bold"), f" -> {stage['reaches']}")
        if stage["approval"]:
            head.append("  APPROVAL", style="bold yellow")
        if not stage["reversible"]:
            head.append("  IRREVERSIBLE", style="bold red")
        branch = root.add(head)
        branch.add(Text(f"does: {stage['does']}"))
        if stage["gates"]:
            gates = ", ".join(g["name"] + ("" if g["blocking"] else " (warning)") for g in stage["gates"])
            branch.add(Text(f"gates: {gates} ({_WHEN[stage['gates_run']]})"))
        if stage["approval"]:
            branch.add(Text(f"approval: {stage['approval']}", style="yellow"))
        branch.add(Text(f"undo: {stage['undo'] or 'cannot be undone'}", style="dim" if stage["undo"] else "red"))
    approvers = ", ".join(data["approvers"]) or "anyone"
    root.add(Text(f"approvals by {approvers}; time-out {data['approval_timeout_seconds']:g}s fails safe", style="dim"))
    return root


def status_view(data: dict[str, Any]) -> RenderableType:
    """Every migration of ``status_data``: a summary table, then its approvals, work and gates."""
    if not data["migrations"]:
        return Text(f"no migrations in {data['control_store']}")
    parts: list[RenderableType] = [Text(f"control store: {data['control_store']}", style="dim")]
    for m in data["migrations"]:
        parts += migration_tables(m)
    return Group(*parts)


def migration_tables(m: dict[str, Any]) -> list[RenderableType]:
    routing, backfill, validation, queue = m["routing"], m["backfill"], m["validation"], m["reconciliation_queue"]
    summary = Table(title=f"{m['name']}: {m['phase']}", title_justify="left", show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row(
        "routing",
        f"writes {routing['writes']}, reads {routing['reads_percent_new']:g}% new, "
        f"shadow {'on' if routing['shadow'] else 'off'}",
    )
    summary.add_row("held by", f"{m['held_by'] or 'no run'} (epoch {m['epoch']})")
    summary.add_row(
        "backfill",
        f"{backfill['rows_copied']} rows copied, {backfill['segments_done']}/{backfill['segments']} segments done"
        if backfill["segments"]
        else "not started",
    )
    summary.add_row(
        "validation",
        f"{validation['segments_done']}/{validation['segments']} segments, {validation['differing_keys']} "
        f"differing keys ({validation['unrepaired']} unrepaired)"
        if validation["run_id"] is not None
        else "not run",
    )
    summary.add_row("reconciliation", f"{queue['pending']} pending, {queue['dead']} dead")
    out: list[RenderableType] = [Text(""), summary]
    if m["pending_approvals"]:
        approvals = Table(title="approvals pending", title_justify="left", title_style="bold yellow")
        for column in ("step", "asked", "command"):
            approvals.add_column(column)
        for a in m["pending_approvals"]:
            asked = f"epoch {a['epoch']}, attempt {a['attempt']}, by {a['asked_by']}"
            approvals.add_row(a["step"], asked, a["command"])
        out.append(approvals)
    if backfill["unfinished"]:
        segments = Table(title="unfinished backfill segments", title_justify="left")
        for column in ("segment", "range", "state", "rows"):
            segments.add_column(column)
        for s in backfill["unfinished"]:
            segments.add_row(str(s["segment"]), str(s["range"]), s["state"], str(s["rows_copied"]))
        out.append(segments)
    if m["last_gates"]:
        gates = Table(title="last gates", title_justify="left")
        for column in ("at", "stage/gate", "verdict", "summary"):
            gates.add_column(column)
        for g in m["last_gates"]:
            verdict = (
                Text("pass", "green")
                if g["passed"]
                else Text("FAIL", "bold red")
                if g["blocking"]
                else Text("warn", "yellow")
            )
            gates.add_row(f"{g['at']:%H:%M:%S}", f"{g['stage']}/{g['gate']}", verdict, g["summary"])
        out.append(gates)
    out.append(_history_table(m))
    return out


def _history_table(m: dict[str, Any]) -> Table:
    if "audit" in m:
        table = Table(title="audit log", title_justify="left")
        for column in ("at", "action", "actor", "detail"):
            table.add_column(column)
        for e in m["audit"]:
            detail = e["detail"]
            text = ", ".join(f"{k}={v}" for k, v in detail.items()) if isinstance(detail, dict) else str(detail)
            table.add_row(f"{e['at']:%Y-%m-%d %H:%M:%S}", e["action"], e["actor"], text)
        return table
    table = Table(title="recent phases", title_justify="left")
    for column in ("at", "phase", "actor", "reason"):
        table.add_column(column)
    for h in m["recent_phases"]:
        table.add_row(f"{h['at']:%Y-%m-%d %H:%M:%S}", h["phase"], h["actor"], h["reason"] or "")
    return table
