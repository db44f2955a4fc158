"""Moving reads, then writes, to the new store, and back: every step is a flag flip.

Each forward step has its inverse beside it; ``rollback_routing`` undoes all of them at
once. The write switch is fenced by a compare-and-set on the writes flag, so two runs
cannot both switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from shiftover.control.store import utcnow
from shiftover.flags.routing import (
    WriteMode,
    read_routing,
    set_reads_percent,
    set_shadow,
    set_write_mode,
)


def enable_dual_write(store: Engine, migration: str, actor: str) -> None:
    """Old stays the source of truth; every write also reaches the new store."""
    if read_routing(store, migration).writes != WriteMode.DUAL_OLD_PRIMARY:
        set_write_mode(store, migration, WriteMode.DUAL_OLD_PRIMARY, actor, reason="enable dual-write")


def disable_dual_write(store: Engine, migration: str, actor: str) -> None:
    set_write_mode(store, migration, WriteMode.OLD_ONLY, actor, reason="undo dual-write")


def start_shadow_reads(store: Engine, migration: str, actor: str) -> None:
    set_shadow(store, migration, True, actor, reason="shadow reads on")


def stop_shadow_reads(store: Engine, migration: str, actor: str) -> None:
    set_shadow(store, migration, False, actor, reason="shadow reads off")


def move_reads(store: Engine, migration: str, percent: float, actor: str) -> None:
    """Send ``percent`` of reads (bucketed by key) to the new store."""
    set_reads_percent(store, migration, percent, actor, reason=f"canary reads at {percent:g}%")


@dataclass(frozen=True)
class WriteSwitch:
    at: datetime
    version: int


def switch_writes(store: Engine, migration: str, actor: str) -> WriteSwitch:
    """Make the new store the source of truth; the old one is still written for rollback.

    Fenced: only a run that saw the writes flag in dual-old-primary mode may switch it, and
    the compare-and-set refuses a second switch from the same version.
    """
    routing = read_routing(store, migration)
    if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
        return WriteSwitch(at=utcnow(), version=routing.version)
    if routing.writes is not WriteMode.DUAL_OLD_PRIMARY:
        from shiftover.errors import FlagError

        raise FlagError(
            f"writes of {migration!r} are {routing.writes}, not {WriteMode.DUAL_OLD_PRIMARY}: "
            "dual-write must be on before writes switch"
        )
    version = set_write_mode(
        store, migration, WriteMode.DUAL_NEW_PRIMARY, actor,
        expected_version=routing.version, reason="switch writes to the new store",
    )
    return WriteSwitch(at=utcnow(), version=version)


def stop_old_writes(store: Engine, migration: str, actor: str) -> None:
    """The irreversible step: the old store stops receiving writes."""
    set_write_mode(store, migration, WriteMode.NEW_ONLY, actor, reason="stop writing the old store")


def rollback_routing(store: Engine, migration: str, actor: str, reason: str, *, keep_dual_write: bool = True) -> None:
    """Reads and writes back to the old store at once (new still written unless told not to)."""
    routing = read_routing(store, migration)
    writes = WriteMode.DUAL_OLD_PRIMARY if keep_dual_write else WriteMode.OLD_ONLY
    if routing.reads_percent:
        set_reads_percent(store, migration, 0, actor, reason=f"rollback: {reason}")
    if routing.writes is not writes:
        set_write_mode(store, migration, writes, actor, reason=f"rollback: {reason}")
    if routing.shadow:
        set_shadow(store, migration, False, actor, reason=f"rollback: {reason}")
