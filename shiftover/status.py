"""``shiftover status``: what a migration is doing now, read from the control store.

``status_data`` gathers it as plain data (what ``--json`` prints, for scripts); ``render_status``
prints the same data for people.
"""

from __future__ import annotations

from typing import Any

from shiftover.control.store import ControlStore, open_store
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.story import last_gate_results


def status_data(control_url: str, name: str | None = None, *, history: bool = False) -> dict[str, Any]:
    """Every migration's (or ``name``'s) state; ``history``: the whole audit log instead of the last phases."""
    store = open_store(control_url)
    names = [name] if name else [m["name"] for m in store.migrations()]
    return {"control_store": store.url, "migrations": [one_migration(store, n, history=history) for n in names]}


def one_migration(store: ControlStore, name: str, *, history: bool = False) -> dict[str, Any]:
    from shiftover.approvals import pending_requests
    from shiftover.backfill.checkpoints import backfill_status
    from shiftover.control.lease import read_lease
    from shiftover.control.store import utcnow
    from shiftover.diff import validation_status
    from shiftover.reconcile import queue_depth

    routing = read_routing(store.engine, name)
    lease = read_lease(store.engine, name)
    live = lease.holder is not None and lease.expires_at is not None and lease.expires_at > utcnow()
    backfill = backfill_status(store.engine, name)
    validation = validation_status(store.engine, name)
    depth = queue_depth(store.engine, name)
    data: dict[str, Any] = {
        "name": name,
        "phase": str(store.phase(name)),
        "routing": {
            "writes": str(routing.writes),
            # new-only reads the new store whatever the percentage says
            "reads_percent_new": 100.0 if routing.writes is WriteMode.NEW_ONLY else routing.reads_percent,
            "shadow": routing.shadow,
        },
        "held_by": lease.holder if live else None,
        "epoch": lease.epoch,
        "pending_approvals": [
            {
                "step": r.step,
                "epoch": r.epoch,
                "attempt": r.attempt,  # with approvals.keys, a signature covers the epoch and attempt
                "asked_by": r.holder,
                "command": f"shiftover approve {r.holder.partition('/')[2]} --approver NAME "
                f"--confirm-name {name} --reason '...'",
            }
            for r in pending_requests(store.engine, name)
        ],
        "backfill": {
            "rows_copied": backfill.rows_copied,
            "segments": backfill.segments,
            "segments_done": backfill.segments_done,
            "unfinished": [s for s in backfill.per_segment if s["state"] != "done"][:8],
        },
        "validation": {
            "run_id": validation.run_id,
            "segments": validation.segments,
            "segments_done": validation.segments_done,
            "differing_keys": validation.failures,
            "unrepaired": validation.unrepaired,
            "sample": validation.sample,
        },
        "reconciliation_queue": {"pending": depth.get("pending", 0), "dead": depth.get("dead", 0)},
        "last_gates": last_gate_results(store, name, limit=8),
    }
    if history:
        data["audit"] = store.audit_entries(name)
    else:
        data["recent_phases"] = [vars(h) for h in store.history(name)[-5:]]
    return data


def render_status(control_url: str, name: str | None = None, *, history: bool = False) -> str:
    data = status_data(control_url, name, history=history)
    if not data["migrations"]:
        return f"no migrations in {data['control_store']}"
    return f"control store: {data['control_store']}\n\n" + "\n\n".join(render_one(m) for m in data["migrations"])


def render_one(m: dict[str, Any]) -> str:
    routing, backfill, validation = m["routing"], m["backfill"], m["validation"]
    lines = [
        f"{m['name']}: {m['phase']}",
        f"  routing: writes {routing['writes']}, reads {routing['reads_percent_new']:g}% new, "
        f"shadow {'on' if routing['shadow'] else 'off'}",
        f"  held by: {m['held_by'] or 'no run'} (epoch {m['epoch']})",
    ]
    for a in m["pending_approvals"]:
        asked = f"asked at epoch {a['epoch']}, attempt {a['attempt']}, by {a['asked_by']}"
        lines.append(f"  approval pending: {a['step']} ({asked})")
        lines.append(f"    {a['command']}")
    if not backfill["segments"]:
        lines.append("  backfill: not started")
    else:
        lines.append(
            f"  backfill: {backfill['rows_copied']} rows copied, "
            f"{backfill['segments_done']}/{backfill['segments']} segments done"
        )
        lines += [
            f"    segment {s['segment']} {s['range']}: {s['state']}, {s['rows_copied']} rows"
            for s in backfill["unfinished"]
        ]
    if validation["run_id"] is None:
        lines.append("  validation: not run")
    else:
        lines.append(
            f"  validation: last run {validation['run_id']}: {validation['segments_done']}/{validation['segments']} "
            f"segments, {validation['differing_keys']} differing keys ({validation['unrepaired']} unrepaired)"
        )
        lines += [f"    {s['kind']} {s['key']} {s['columns']}".rstrip() for s in validation["sample"]]
    queue = m["reconciliation_queue"]
    lines.append(f"  reconciliation queue: {queue['pending']} pending, {queue['dead']} dead")
    if m["last_gates"]:
        lines.append("  last gates:")
        for g in m["last_gates"]:
            verdict = "pass" if g["passed"] else ("FAIL" if g["blocking"] else "warn")
            lines.append(f"    {g['at']:%H:%M:%S} {g['stage']}/{g['gate']}: {verdict} - {g['summary']}")
    if "audit" in m:
        lines.append("  audit log:")
        lines += [
            f"    {e['at']:%Y-%m-%d %H:%M:%S} {e['action']} ({e['actor']}) {_detail(e['detail'])}" for e in m["audit"]
        ]
    else:
        lines.append("  recent phases:")
        lines += [
            f"    {h['at']:%Y-%m-%d %H:%M:%S} {h['phase']} ({h['actor']}) {h['reason']}" for h in m["recent_phases"]
        ]
    return "\n".join(lines)


def _detail(detail: Any) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items())
    return str(detail)
