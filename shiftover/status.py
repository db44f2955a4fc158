"""``shiftover status``: what a migration is doing now, read from the control store."""

from __future__ import annotations

from collections.abc import Callable

from shiftover.control.store import ControlStore, open_store
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.story import last_gate_results


def render_status(control_url: str, name: str | None = None) -> str:
    store = open_store(control_url)
    names = [name] if name else [m["name"] for m in store.migrations()]
    if not names:
        return f"no migrations in {store.url}"
    return f"control store: {store.url}\n\n" + "\n\n".join(render_one(store, n) for n in names)


def render_one(store: ControlStore, name: str) -> str:
    routing = read_routing(store.engine, name)
    reads = 100.0 if routing.writes is WriteMode.NEW_ONLY else routing.reads_percent  # new-only reads new
    lines = [
        f"{name}: {store.phase(name)}",
        f"  routing: writes {routing.writes}, reads {reads:g}% new, shadow {'on' if routing.shadow else 'off'}",
    ]
    for section in _SECTIONS:
        lines.extend(f"  {line}" for line in section(store, name))
    gates = last_gate_results(store, name, limit=8)
    if gates:
        lines.append("  last gates:")
        for g in gates:
            verdict = "pass" if g["passed"] else ("FAIL" if g["blocking"] else "warn")
            lines.append(f"    {g['at']:%H:%M:%S} {g['stage']}/{g['gate']}: {verdict} - {g['summary']}")
    history = store.history(name)[-5:]
    lines.append("  recent phases:")
    lines.extend(f"    {h.at:%Y-%m-%d %H:%M:%S} {h.phase} ({h.actor}) {h.reason}" for h in history)
    return "\n".join(lines)


def backfill_lines(store: ControlStore, name: str) -> list[str]:
    from shiftover.backfill.checkpoints import backfill_status

    status = backfill_status(store.engine, name)
    if not status.segments:
        return ["backfill: not started"]
    lines = [f"backfill: {status.rows_copied} rows copied, {status.segments_done}/{status.segments} segments done"]
    lines += [
        f"  segment {s['segment']} {s['range']}: {s['state']}, {s['rows_copied']} rows"
        for s in status.per_segment
        if s["state"] != "done"
    ][:8]
    return lines


def validation_lines(store: ControlStore, name: str) -> list[str]:
    from shiftover.diff import validation_status

    status = validation_status(store.engine, name)
    if status.run_id is None:
        return ["validation: not run"]
    lines = [
        f"validation: last run {status.run_id}: {status.segments_done}/{status.segments} segments, "
        f"{status.failures} differing keys ({status.unrepaired} unrepaired)"
    ]
    lines += [f"  {s['kind']} {s['key']} {s['columns']}".rstrip() for s in status.sample]
    return lines


def lease_and_approval_lines(store: ControlStore, name: str) -> list[str]:
    """Which run holds the migration, and every approval waiting for a person (with its answer command)."""
    from shiftover.approvals import pending_requests
    from shiftover.control.lease import read_lease
    from shiftover.control.store import utcnow

    lease = read_lease(store.engine, name)
    live = lease.holder is not None and lease.expires_at is not None and lease.expires_at > utcnow()
    lines = [f"held by: {lease.holder} (epoch {lease.epoch})" if live else f"held by: no run (epoch {lease.epoch})"]
    for r in pending_requests(store.engine, name):
        run_id = r.holder.partition("/")[2]
        lines.append(f"approval pending: {r.step} (asked at epoch {r.epoch}, attempt {r.attempt}, by {r.holder})")
        lines.append(f"  shiftover approve {run_id} --approver NAME --confirm-name {name} --reason '...'")
    return lines


def queue_lines(store: ControlStore, name: str) -> list[str]:
    from shiftover.reconcile import queue_depth

    depth = queue_depth(store.engine, name)
    return [f"reconciliation queue: {depth.get('pending', 0)} pending, {depth.get('dead', 0)} dead"]


# Each stage contributes lines about its own progress, read from its own tables.
_SECTIONS: list[Callable[[ControlStore, str], list[str]]] = [
    lease_and_approval_lines,
    backfill_lines,
    validation_lines,
    queue_lines,
]
