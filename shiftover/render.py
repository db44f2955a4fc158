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

from shiftover.status import asked, detail_text, summary_rows, verdict

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
    summary = Table(title=f"{m['name']}: {m['phase']}", title_justify="left", show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    for label, text in summary_rows(m):
        summary.add_row(label, text)
    out: list[RenderableType] = [Text(""), summary]
    if m["pending_approvals"]:
        rows: list[tuple[Any, ...]] = [(a["step"], asked(a), a["command"]) for a in m["pending_approvals"]]
        out.append(_table("approvals pending", ("step", "asked", "command"), rows, title_style="bold yellow"))
    if m["backfill"]["unfinished"]:
        rows = [
            (str(s["segment"]), str(s["range"]), s["state"], str(s["rows_copied"])) for s in m["backfill"]["unfinished"]
        ]
        out.append(_table("unfinished backfill segments", ("segment", "range", "state", "rows"), rows))
    if m["last_gates"]:
        rows = [
            (
                f"{g['at']:%H:%M:%S}",
                f"{g['stage']}/{g['gate']}",
                Text(verdict(g), _VERDICT_STYLE[verdict(g)]),
                g["summary"],
            )
            for g in m["last_gates"]
        ]
        out.append(_table("last gates", ("at", "stage/gate", "verdict", "summary"), rows))
    if "audit" in m:
        rows = [(f"{e['at']:%Y-%m-%d %H:%M:%S}", e["action"], e["actor"], detail_text(e["detail"])) for e in m["audit"]]
        out.append(_table("audit log", ("at", "action", "actor", "detail"), rows))
    else:
        rows = [(f"{h['at']:%Y-%m-%d %H:%M:%S}", h["phase"], h["actor"], h["reason"] or "") for h in m["recent_phases"]]
        out.append(_table("recent phases", ("at", "phase", "actor", "reason"), rows))
    return out


_VERDICT_STYLE = {"pass": "green", "FAIL": "bold red", "warn": "yellow"}


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], title_style: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style=title_style)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table
