"""A migration's routing as three flags: where writes go, what share of reads goes to the
new store, and whether reads are shadowed. Flows flip them; the application reads them.

Flag keys are ``<migration>:writes``, ``<migration>:reads_percent`` and ``<migration>:shadow``.
With no flags at all the safe default holds: old store only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.engine import Engine

from shiftover.flags.store import Flag, read_flags, set_flag


class WriteMode(StrEnum):
    OLD_ONLY = "old_only"
    DUAL_OLD_PRIMARY = "dual_old_primary"  # old is the source of truth, new is written after it
    DUAL_NEW_PRIMARY = "dual_new_primary"  # new is the source of truth, old still written (rollback)
    NEW_ONLY = "new_only"


@dataclass(frozen=True)
class Routing:
    writes: WriteMode = WriteMode.OLD_ONLY
    reads_percent: float = 0.0
    shadow: bool = False
    version: int = 0  # version of the writes flag, for compare-and-set switches

    @classmethod
    def from_flags(cls, migration: str, flags: dict[str, Flag]) -> Routing:
        writes = flags.get(writes_key(migration))
        reads = flags.get(reads_key(migration))
        shadow = flags.get(shadow_key(migration))
        return cls(
            writes=WriteMode(writes.value) if writes else WriteMode.OLD_ONLY,
            reads_percent=float(reads.value) if reads else 0.0,
            shadow=bool(shadow.value) if shadow else False,
            version=writes.version if writes else 0,
        )


def writes_key(migration: str) -> str:
    return f"{migration}:writes"


def reads_key(migration: str) -> str:
    return f"{migration}:reads_percent"


def shadow_key(migration: str) -> str:
    return f"{migration}:shadow"


def read_routing(engine: Engine, migration: str) -> Routing:
    return Routing.from_flags(migration, read_flags(engine, prefix=f"{migration}:"))


def set_write_mode(
    engine: Engine, migration: str, mode: WriteMode, actor: str, *, expected_version: int | None = None,
    reason: str = "",
) -> int:
    return set_flag(engine, writes_key(migration), str(mode), actor, migration=migration,
                    expected_version=expected_version, reason=reason)


def set_reads_percent(engine: Engine, migration: str, percent: float, actor: str, reason: str = "") -> int:
    if not 0 <= percent <= 100:
        raise ValueError(f"read percentage must be within 0..100, not {percent}")
    return set_flag(engine, reads_key(migration), percent, actor, migration=migration, reason=reason)


def set_shadow(engine: Engine, migration: str, on: bool, actor: str, reason: str = "") -> int:
    return set_flag(engine, shadow_key(migration), on, actor, migration=migration, reason=reason)
