"""``shiftover status``: what a migration is doing now, read from the control store."""

from __future__ import annotations

from collections.abc import Callable

from shiftover.control.store import ControlStore, open_store
from shiftover.flags.routing import read_routing
from shiftover.story import last_gate_results


def render_status(control_url: str, name: str | None = None) -> str:
    store = open_store(control_url)
    names = [name] if name else [m["name"] for m in store.migrations()]
    if not names:
        return f"no migrations in {store.url}"
    return "\n\n".join(render_one(store, n) for n in names)


def render_one(store: ControlStore, name: str) -> str:
    routing = read_routing(store.engine, name)
    lines = [
        f"{name}: {store.phase(name)}",
        f"  routing: writes {routing.writes}, reads {routing.reads_percent:g}% new, "
        f"shadow {'on' if routing.shadow else 'off'}",
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


# Each stage's module contributes lines about its own progress (backfill, diff, queue).
_SECTIONS: list[Callable[[ControlStore, str], list[str]]] = []
