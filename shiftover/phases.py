"""The lifecycle of a migration as data: phases and legal transitions.

Which steps are irreversible and which need an approval is declared by the plan's stages
(``shiftover.plan``: ``Plan.irreversible_phases``, ``Plan.approval_phases``); ``ROLLBACK_FROM``
here is the transition graph's side of the same fact, and a test holds the two equal.
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

# Phases from which the rollback flow can return reads and writes to the old store.
# Planned included: the dual-write stage flips its flag before it enters dual_writing.
ROLLBACK_FROM: frozenset[Phase] = frozenset(ORDER[: ORDER.index(Phase.OLD_WRITES_STOPPED)])

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
