"""A migration's routing as three flags: where writes go, what share of reads goes to the
new store, and whether reads are shadowed. Flows flip them; the application reads them.

Flag keys are ``<migration>:writes``, ``<migration>:reads_percent`` and ``<migration>:shadow``,
plus two optional ones: ``<migration>:reads_targeting`` (rules checked before the percentage,
see ``bucketing.Targeting``) and ``<migration>:kill`` (the kill switch: reads back to the old
store, shadow off, and in dual-write with old primary the secondary write stops; once new is
the source of truth the kill switch leaves writes alone, since only the rollback flow may
move them). With no flags at all the safe default holds: old store only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine

from shiftover.control.store import Fence
from shiftover.flags.bucketing import Targeting, in_rollout
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
    migration: str = ""  # names the rollout's hash, so each migration buckets independently
    targeting: Targeting = field(default_factory=Targeting)
    killed: bool = False

    @classmethod
    def from_flags(cls, migration: str, flags: Mapping[str, Flag]) -> Routing:
        writes = flags.get(writes_key(migration))
        reads = flags.get(reads_key(migration))
        shadow = flags.get(shadow_key(migration))
        targeting = flags.get(targeting_key(migration))
        kill = flags.get(kill_key(migration))
        routing = cls(
            writes=WriteMode(writes.value) if writes else WriteMode.OLD_ONLY,
            reads_percent=float(reads.value) if reads else 0.0,
            shadow=bool(shadow.value) if shadow else False,
            version=writes.version if writes else 0,
            migration=migration,
            targeting=Targeting.from_value(targeting.value if targeting else None),
        )
        return routing.kill() if kill is not None and bool(kill.value) else routing

    def kill(self) -> Routing:
        """This routing with the kill switch applied (see the module docstring)."""
        writes = WriteMode.OLD_ONLY if self.writes == WriteMode.DUAL_OLD_PRIMARY else self.writes
        return Routing(
            writes=writes, reads_percent=0.0, shadow=False, version=self.version, migration=self.migration, killed=True
        )

    def reads_new(self, bucket_key: Any, attributes: Mapping[str, Any] | None = None) -> bool:
        """Whether a read of ``bucket_key`` goes to the new store (targeting, then percentage)."""
        if self.writes == WriteMode.NEW_ONLY:
            return True
        if self.killed:
            return False
        decided = self.targeting.decide(bucket_key, attributes)
        if decided is not None:
            return decided
        return in_rollout(reads_key(self.migration), bucket_key, self.reads_percent)


def writes_key(migration: str) -> str:
    return f"{migration}:writes"


def reads_key(migration: str) -> str:
    return f"{migration}:reads_percent"


def shadow_key(migration: str) -> str:
    return f"{migration}:shadow"


def targeting_key(migration: str) -> str:
    return f"{migration}:reads_targeting"


def kill_key(migration: str) -> str:
    return f"{migration}:kill"


def read_routing(engine: Engine, migration: str) -> Routing:
    return Routing.from_flags(migration, read_flags(engine, prefix=f"{migration}:"))


def set_write_mode(
    engine: Engine,
    migration: str,
    mode: WriteMode,
    actor: str,
    *,
    expected_version: int | None = None,
    reason: str = "",
    fence: Fence | None = None,
) -> int:
    return set_flag(
        engine,
        writes_key(migration),
        str(mode),
        actor,
        migration=migration,
        expected_version=expected_version,
        reason=reason,
        fence=fence,
    )


def set_reads_percent(
    engine: Engine, migration: str, percent: float, actor: str, reason: str = "", fence: Fence | None = None
) -> int:
    if not 0 <= percent <= 100:
        raise ValueError(f"read percentage must be within 0..100, not {percent}")
    return set_flag(engine, reads_key(migration), percent, actor, migration=migration, reason=reason, fence=fence)


def set_shadow(
    engine: Engine, migration: str, on: bool, actor: str, reason: str = "", fence: Fence | None = None
) -> int:
    return set_flag(engine, shadow_key(migration), on, actor, migration=migration, reason=reason, fence=fence)


def set_reads_targeting(engine: Engine, migration: str, targeting: Targeting, actor: str, reason: str = "") -> int:
    """Rules evaluated before the read percentage (allow-list of keys, attribute equality)."""
    return set_flag(engine, targeting_key(migration), targeting.to_value(), actor, migration=migration, reason=reason)


def set_kill_switch(engine: Engine, migration: str, on: bool, actor: str, reason: str = "") -> int:
    """Flip the kill switch; every application instance sees it within its flag TTL."""
    return set_flag(engine, kill_key(migration), on, actor, migration=migration, reason=reason)
