"""The lifecycle of a migration as data: phases, legal transitions, and which steps are irreversible.

The plan reads ``IRREVERSIBLE`` and ``NEEDS_APPROVAL`` and the rollback flow ``ROLLBACK_FROM``
instead of hard-coding them (the stage flows still name the steps they ask approval for).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PLANNED = "planned"
    DUAL_WRITING = "dual_writing"
    BACKFILLING = "backfilling"
    BACKFILLED = "backfilled"
    VALIDATED = "validated"
    SHADOW_READING = "shadow_reading"
    READS_CANARY = "reads_canary"
    READS_SWITCHED = "reads_switched"
    WRITES_SWITCHED = "writes_switched"
    OLD_WRITES_STOPPED = "old_writes_stopped"
    ARCHIVED = "archived"
    DECOMMISSIONED = "decommissioned"
    ROLLED_BACK = "rolled_back"


ORDER: tuple[Phase, ...] = (
    Phase.PLANNED,
    Phase.DUAL_WRITING,
    Phase.BACKFILLING,
    Phase.BACKFILLED,
    Phase.VALIDATED,
    Phase.SHADOW_READING,
    Phase.READS_CANARY,
    Phase.READS_SWITCHED,
    Phase.WRITES_SWITCHED,
    Phase.OLD_WRITES_STOPPED,
    Phase.ARCHIVED,
    Phase.DECOMMISSIONED,
)

# Entering these phases cannot be undone by a flag flip.
IRREVERSIBLE: frozenset[Phase] = frozenset({Phase.OLD_WRITES_STOPPED, Phase.ARCHIVED, Phase.DECOMMISSIONED})

# Entering these phases waits for a person's approval: the write switch (new becomes the
# source of truth), stopping writes to the old store, and dropping it.
NEEDS_APPROVAL: frozenset[Phase] = frozenset({Phase.WRITES_SWITCHED, Phase.OLD_WRITES_STOPPED, Phase.DECOMMISSIONED})

# Phases from which the rollback flow can return reads and writes to the old store.
ROLLBACK_FROM: frozenset[Phase] = frozenset(
    ORDER[ORDER.index(Phase.DUAL_WRITING) : ORDER.index(Phase.OLD_WRITES_STOPPED)]
)

_EXTRA: dict[Phase, set[Phase]] = {
    Phase.BACKFILLING: {Phase.BACKFILLING},  # a resumed backfill re-enters its phase
    Phase.BACKFILLED: {Phase.BACKFILLING},  # a top-up backfill after new data
    Phase.VALIDATED: {Phase.BACKFILLING, Phase.READS_CANARY, Phase.READS_SWITCHED},  # no shadow stage
    Phase.SHADOW_READING: {Phase.READS_SWITCHED},  # a single 100% step
    Phase.READS_CANARY: {Phase.READS_CANARY},  # one transition per canary step
    Phase.ROLLED_BACK: {Phase.DUAL_WRITING, Phase.PLANNED},  # start again after a rollback
}


def allowed_next(current: Phase) -> set[Phase]:
    """Phases reachable in one step from ``current``."""
    nxt: set[Phase] = set(_EXTRA.get(current, set()))
    if current in ORDER and current is not ORDER[-1]:
        nxt.add(ORDER[ORDER.index(current) + 1])
    if current in ROLLBACK_FROM:
        nxt.add(Phase.ROLLED_BACK)
    return nxt


def is_at_least(current: Phase, wanted: Phase) -> bool:
    """True when ``current`` is ``wanted`` or later in the forward order (rolled_back is never)."""
    if current not in ORDER or wanted not in ORDER:
        return False
    return ORDER.index(current) >= ORDER.index(wanted)
