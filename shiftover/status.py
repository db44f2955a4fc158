"""``shiftover status``: what a migration is doing now, read from the control store.

``status_data`` gathers it as plain data (what ``--json`` prints, for scripts); ``render_status``
prints the same data for people.
"""

from __future__ import annotations

from typing import Any

from shiftover.connect import redact
from shiftover.control.store import ControlStore, existing_store
from shiftover.errors import ControlStoreError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.story import last_gate_results


def status_data(control_url: str, name: str | None = None, *, history: bool = False) -> dict[str, Any]:
    """Every migration's (or ``name``'s) state; ``history``: the whole audit log instead of the last phases.
    Reading creates nothing: where no store exists yet there is no migration to show."""
    store = existing_store(control_url)
    if store is None:
        if name:  # worded as when the store exists without it
            where = redact(control_url)
            raise ControlStoreError(f"no migration named {name!r} in control store {where} (none there yet)")
        return {"control_store": redact(control_url), "migrations": []}
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
    data["drop_due"] = drop_due(store, name)
    if history:
        data["audit"] = store.audit_entries(name)
    else:
        data["recent_phases"] = [vars(h) for h in store.history(name)[-5:]]
    return data


def drop_due(store: ControlStore, name: str) -> str | None:
    """When the retention period before the drop ends (a table move's archive, a schema change's old
    columns), as the last run that waited for it audited; None when no run waits for it now."""
    waits = store.audit_entries(name, action="retention")
    changes = store.history(name)
    if not waits or not changes or changes[-1].at > waits[-1]["at"]:  # entered another phase since
        return None
    return str(waits[-1]["detail"]["drop_due"])


def render_status(control_url: str, name: str | None = None, *, history: bool = False) -> str:
    data = status_data(control_url, name, history=history)
    if not data["migrations"]:
        return f"no migrations in {data['control_store']}"
    return f"control store: {data['control_store']}\n\n" + "\n\n".join(render_one(m) for m in data["migrations"])


def summary_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines every view of a migration's status shows: routing, holder, work, queue."""
    routing, backfill, validation, queue = m["routing"], m["backfill"], m["validation"], m["reconciliation_queue"]
    rows = [
        (
            "routing",
            f"writes {routing['writes']}, reads {routing['reads_percent_new']:g}% new, "
            f"shadow {'on' if routing['shadow'] else 'off'}",
        ),
        ("held by", f"{m['held_by'] or 'no run'} (epoch {m['epoch']})"),
    ]
    done = f"{backfill['segments_done']}/{backfill['segments']} segments done"
    rows.append(
        ("backfill", f"{backfill['rows_copied']} rows copied, {done}" if backfill["segments"] else "not started")
    )
    if validation["run_id"] is None:
        rows.append(("validation", "not run"))
    else:
        screened = f"{validation['segments_done']}/{validation['segments']} segments"
        found = f"{validation['differing_keys']} differing keys ({validation['unrepaired']} unrepaired)"
        rows.append(("validation", f"last run {validation['run_id']}: {screened}, {found}"))
    rows.append(("reconciliation queue", f"{queue['pending']} pending, {queue['dead']} dead"))
    return rows


def asked(a: dict[str, Any]) -> str:
    """When and by whom a pending approval was asked."""
    return f"asked at epoch {a['epoch']}, attempt {a['attempt']}, by {a['asked_by']}"


def verdict(g: dict[str, Any]) -> str:
    """A gate result's verdict: pass, FAIL (blocking) or warn."""
    return "pass" if g["passed"] else ("FAIL" if g["blocking"] else "warn")


def render_one(m: dict[str, Any]) -> str:
    backfill, validation = m["backfill"], m["validation"]
    rows = dict(summary_rows(m))
    lines = [f"{m['name']}: {m['phase']}", *(f"  {label}: {rows[label]}" for label in ("routing", "held by"))]
    for a in m["pending_approvals"]:
        lines.append(f"  approval pending: {a['step']} ({asked(a)})")
        lines.append(f"    {a['command']}")
    lines.append(f"  backfill: {rows['backfill']}")
    lines += [
        f"    segment {s['segment']} {s['range']}: {s['state']}, {s['rows_copied']} rows"
        for s in backfill["unfinished"]
    ]
    lines.append(f"  validation: {rows['validation']}")
    lines += [f"    {s['kind']} {s['key']} {s['columns']}".rstrip() for s in validation["sample"]]
    lines.append(f"  reconciliation queue: {rows['reconciliation queue']}")
    if m["drop_due"]:
        lines.append(f"  retention: the drop is due at {m['drop_due']} (run again then)")
    if m["last_gates"]:
        lines.append("  last gates:")
        for g in m["last_gates"]:
            lines.append(f"    {g['at']:%H:%M:%S} {g['stage']}/{g['gate']}: {verdict(g)} - {g['summary']}")
    if "audit" in m:
        lines.append("  audit log:")
        lines += [
            f"    {e['at']:%Y-%m-%d %H:%M:%S} {e['action']} ({e['actor']}) {detail_text(e['detail'])}"
            for e in m["audit"]
        ]
    else:
        lines.append("  recent phases:")
        lines += [
            f"    {h['at']:%Y-%m-%d %H:%M:%S} {h['phase']} ({h['actor']}) {h['reason']}" for h in m["recent_phases"]
        ]
    return "\n".join(lines)


def detail_text(detail: Any) -> str:
    """An audit entry's detail as one line."""
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items())
    return str(detail)
