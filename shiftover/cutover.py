"""Moving reads, then writes, to the new store, and back: every step is a flag flip.

Each step's inverse is declared on its stage (``shiftover.plan``) and applied by
``shiftover.rollback``. The write switch is fenced by a compare-and-set on the writes
flag, so two runs cannot both switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import ControlStore, Fence
from shiftover.errors import FlagError, GateError
from shiftover.flags.routing import (
    WriteMode,
    read_routing,
    set_reads_percent,
    set_shadow,
    set_write_mode,
    writes_key,
)


def enable_dual_write(store: Engine, migration: str, actor: str, fence: Fence | None = None) -> None:
    """Old stays the source of truth; every write also reaches the new store."""
    if read_routing(store, migration).writes != WriteMode.DUAL_OLD_PRIMARY:
        set_write_mode(store, migration, WriteMode.DUAL_OLD_PRIMARY, actor, reason="enable dual-write", fence=fence)


def start_shadow_reads(store: Engine, migration: str, actor: str, fence: Fence | None = None) -> None:
    set_shadow(store, migration, True, actor, reason="shadow reads on", fence=fence)


def move_reads(store: Engine, migration: str, percent: float, actor: str, fence: Fence | None = None) -> None:
    """Send ``percent`` of reads (bucketed by key) to the new store."""
    set_reads_percent(store, migration, percent, actor, reason=f"canary reads at {percent:g}%", fence=fence)


@dataclass(frozen=True)
class WriteSwitch:
    at: datetime
    version: int


@dataclass(frozen=True)
class WriteFence:
    """What the write switch checks just before it flips: the queue and the last diff."""

    pending: int
    dead: int
    last_diff: dict[str, Any] | None  # the latest checksum gate result, or None

    @property
    def problems(self) -> list[str]:
        found = []
        if self.pending or self.dead:
            found.append(f"reconciliation queue not drained ({self.pending} pending, {self.dead} dead)")
        if self.last_diff is None:
            found.append("no checksum diff has run for this migration")
        elif not self.last_diff["passed"]:
            found.append(f"the last checksum diff at {self.last_diff['at']} failed: {self.last_diff['summary']}")
        return found


def read_write_fence(store: Engine, migration: str) -> WriteFence:
    """The queue depth now and the latest checksum gate result from the control store."""
    from shiftover.reconcile import queue_depth

    depth = queue_depth(store, migration)
    t = schema.gate_results
    query = (
        sa.select(t.c.passed, t.c.summary, t.c.at)
        .where(t.c.migration == migration, t.c.gate == "checksum")
        .order_by(t.c.id.desc())
        .limit(1)
    )
    with store.connect() as conn:
        row = conn.execute(query).first()
    return WriteFence(depth["pending"], depth["dead"], dict(row._mapping) if row else None)


def switch_writes(
    store: Engine, migration: str, actor: str, *, fenced: bool = True, fence: Fence | None = None
) -> WriteSwitch:
    """Make the new store the source of truth; the old one is still written for rollback.

    Fenced: refused (``GateError``) unless the reconciliation queue is drained and the last
    checksum diff is clean; then only a run that saw the writes flag in dual-old-primary
    mode may switch it, and the compare-and-set refuses a second switch from that version
    (``FlagError``), so two concurrent runs cannot both switch. The switch time is the flip's
    own audit time (written in the flag's transaction), so every run reports the same one.
    """
    routing = read_routing(store, migration)
    if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
        return WriteSwitch(at=_flipped_at(store, migration, routing.version), version=routing.version)
    if routing.writes is not WriteMode.DUAL_OLD_PRIMARY:
        raise FlagError(
            f"writes of {migration!r} are {routing.writes}, not {WriteMode.DUAL_OLD_PRIMARY}: "
            "dual-write must be on before writes switch"
        )
    if fenced:
        checked = read_write_fence(store, migration)
        if checked.problems:
            raise GateError("write_fence", "; ".join(checked.problems), report=[checked])
    version = set_write_mode(
        store,
        migration,
        WriteMode.DUAL_NEW_PRIMARY,
        actor,
        expected_version=routing.version,
        reason="switch writes to the new store",
        fence=fence,
    )
    at = _flipped_at(store, migration, version)
    ControlStore(store).audit(migration, actor, "write_switch", {"at": at.isoformat(), "version": version})
    return WriteSwitch(at=at, version=version)


def _flipped_at(store: Engine, migration: str, version: int) -> datetime:
    """When the writes flag reached ``version``: the audit entry its own transaction wrote."""
    key = writes_key(migration)
    flips = [
        a["at"]
        for a in ControlStore(store).audit_entries(migration, action="flag")
        if a["detail"]["flag"] == key and a["detail"]["version"] == version
    ]
    if not flips:
        raise FlagError(f"no audit entry for version {version} of flag {key!r}")
    at: datetime = flips[-1]
    return at


def stop_old_writes(store: Engine, migration: str, actor: str, fence: Fence | None = None) -> None:
    """The irreversible step: the old store stops receiving writes."""
    set_write_mode(store, migration, WriteMode.NEW_ONLY, actor, reason="stop writing the old store", fence=fence)
