"""Rollback: the plan's inverses, applied so that no write is lost.

1. **Fence off.** In one transaction the migration's epoch moves on, its lease is revoked and
   every pending approval is cancelled: a run that was carrying on (a canary soak, an approval
   about to be answered) can flip nothing from now on.
2. **Bring the old store up to date** when the new one is the source of truth: every queued
   write bound new -> old is copied first and the copied keys are diffed (old against new); if
   any cannot be copied or still differ, the rollback is refused and names them (the routing is
   left as it is: reads and writes keep their source of truth).
3. **Flip** the routing to the folded inverse of the plan's reversible stages.
4. **Drain again** what was queued new -> old in the moment before the flip (those entries keep
   their direction, so they can never be copied the wrong way), then enter ``rolled_back``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from shiftover.approvals import ApprovalRequest, cancel_pending
from shiftover.control.lease import revoke_lease
from shiftover.control.store import ControlStore, _audit, utcnow
from shiftover.errors import DiffError, FlagError, PhaseError, RollbackRefusedError
from shiftover.flags.routing import Routing, WriteMode, read_routing, set_reads_percent, set_shadow, set_write_mode
from shiftover.mapping import TableMapping
from shiftover.phases import Phase, allowed_next
from shiftover.plan.stages import MigrationState, Plan, RoutingFlip
from shiftover.plan.state import read_state
from shiftover.reconcile import NEW_TO_OLD, drain_queue, pending_by_direction
from shiftover.rowsync import Key
from shiftover.spec import ValidationSpec


@dataclass
class RollbackResult:
    migration: str
    previous: Phase
    flipped_at: datetime | None = None
    epoch: int = 0
    cancelled: list[ApprovalRequest] = field(default_factory=list)
    drained_to_old: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "phase": Phase.ROLLED_BACK if self.flipped_at else self.previous,
            "from": self.previous,
            "flipped_at": self.flipped_at.isoformat() if self.flipped_at else None,
            "epoch": self.epoch,
            "cancelled_approvals": [r.step for r in self.cancelled],
            "drained_to_old": self.drained_to_old,
            "note": self.note,
        }


def refuse_if_irreversible(plan: Plan, state: MigrationState) -> None:
    """``PhaseError`` once an irreversible stage is done (or the old store is no longer written)."""
    gone = plan.irreversibly_done(state) or state.routing.writes is WriteMode.NEW_ONLY
    if gone or Phase.ROLLED_BACK not in allowed_next(state.phase):
        allowed = sorted(str(p) for p in allowed_next(state.phase) - {Phase.ROLLED_BACK})
        raise PhaseError(plan.migration, state.phase, Phase.ROLLED_BACK, allowed)


def fence_off(store: ControlStore, migration: str, actor: str, reason: str) -> tuple[int, list[ApprovalRequest]]:
    """Step 1: epoch moved on, lease revoked, pending approvals cancelled; one transaction."""
    with store.engine.begin() as conn:
        epoch = revoke_lease(conn, migration)
        cancelled = cancel_pending(conn, migration, actor)
        _audit(
            conn,
            migration,
            actor,
            "rollback_started",
            {"reason": reason, "epoch": epoch, "cancelled": [r.step for r in cancelled]},
        )
    return epoch, cancelled


def drain_to_old(
    old: Engine, new: Engine, store: ControlStore, mapping: TableMapping, migration: str
) -> tuple[list[Key], int, str]:
    """Copy every write queued new -> old; returns (keys copied, still pending, last error)."""
    result = drain_queue(old, new, store.engine, mapping, migration, only=NEW_TO_OLD, max_keys=10**9)
    pending = pending_by_direction(store.engine, migration).get(NEW_TO_OLD, 0)
    return result.synced_keys, pending, (result.errors[-1] if result.errors else "")


def recheck_copied(
    old: Engine, new: Engine, mapping: TableMapping, options: ValidationSpec, keys: list[Key]
) -> tuple[int, str]:
    """The scoped diff of the keys just copied new -> old (old is the source of the diff's rules):
    returns (keys still differing, a note). A diff the spec cannot run (a cross-engine float column
    without a tolerance, say) is noted, not fatal: the copy itself succeeded."""
    from shiftover.diff import diff_keys

    if not keys:
        return 0, ""
    try:
        report = diff_keys(old, new, mapping, options, keys)
    except DiffError as exc:
        return 0, f"the scoped diff of {len(keys)} copied key(s) could not run: {exc}"
    return len(report.differences), f"{len(keys)} copied key(s) re-checked: {len(report.differences)} differ"


_WRITES_ORDER = (WriteMode.OLD_ONLY, WriteMode.DUAL_OLD_PRIMARY, WriteMode.DUAL_NEW_PRIMARY, WriteMode.NEW_ONLY)


def flip_routing(store: ControlStore, migration: str, flip: RoutingFlip, actor: str, reason: str) -> datetime:
    """Step 3: reads first (instant relief), then shadow, then writes. A rollback only moves flags
    back towards the old store (a migration rolled back before its dual-write began stays old-only).
    Each flag is compare-and-set: when another writer (a second rollback at the same moment) changed
    it in between, the routing is read again and the flip decided again from it."""
    why = f"rollback: {reason}"
    for attempt in range(1, _FLIP_ATTEMPTS + 1):
        now: Routing = read_routing(store.engine, migration)
        try:
            if flip.reads_percent is not None and now.reads_percent > flip.reads_percent:
                set_reads_percent(store.engine, migration, flip.reads_percent, actor, reason=why)
            if flip.shadow is False and now.shadow:
                set_shadow(store.engine, migration, False, actor, reason=why)
            if flip.writes is not None and _WRITES_ORDER.index(now.writes) > _WRITES_ORDER.index(flip.writes):
                set_write_mode(store.engine, migration, flip.writes, actor, reason=why)
            break
        except FlagError:
            if attempt == _FLIP_ATTEMPTS:
                raise
    return utcnow()


_FLIP_ATTEMPTS = 5


def enter_rolled_back(store: ControlStore, migration: str, actor: str, reason: str, result: RollbackResult) -> None:
    """The phase and the plan's restart marker (``read_state`` forgets stages done before it). A
    rollback run at the same moment as another made the same flips; the one that comes second
    finds the phase entered already and says so, rather than fail after its work is done."""
    try:
        store.transition(migration, Phase.ROLLED_BACK, actor, reason)
    except PhaseError:
        if store.phase(migration) is not Phase.ROLLED_BACK:
            raise
        result.note = "; ".join(filter(None, [result.note, "another rollback entered rolled_back first"]))
        return
    store.audit(migration, actor, "rollback", {k: v for k, v in result.as_dict().items() if k != "phase"})


def roll_back(
    store: ControlStore,
    plan: Plan,
    state: MigrationState,
    actor: str,
    reason: str,
    *,
    old: Engine | None = None,
    new: Engine | None = None,
    mapping: TableMapping | None = None,
    options: ValidationSpec | None = None,
    keep_dual_write: bool = True,
) -> RollbackResult:
    """Steps 1-4 above. ``old``/``new``/``mapping`` are needed only when the new store leads."""
    migration = plan.migration
    refuse_if_irreversible(plan, state)
    result = RollbackResult(migration, state.phase)
    result.epoch, result.cancelled = fence_off(store, migration, actor, reason)
    # the run may have gone past the last reversible stage between ``state`` and the fence
    refuse_if_irreversible(plan, read_state(store, migration))
    flip = plan.rollback_flip(keep_dual_write=keep_dual_write)
    leads = read_routing(store.engine, migration).writes is WriteMode.DUAL_NEW_PRIMARY
    if leads and flip.drain_to_old_first:
        if old is None or new is None or mapping is None:
            raise ValueError("the new store leads: the rollback needs both engines and the mapping to drain")
        copied, pending, error = drain_to_old(old, new, store, mapping, migration)
        result.drained_to_old = len(copied)
        if not pending:
            differing, result.note = recheck_copied(old, new, mapping, options or ValidationSpec(), copied)
            pending, error = differing, (f"{differing} copied key(s) still differ" if differing else error)
        if pending:
            store.audit(migration, actor, "rollback_refused", {"pending": pending, "error": error})
            raise RollbackRefusedError(migration, pending, error or "see the reconciliation queue")
    result.flipped_at = flip_routing(store, migration, flip, actor, reason)
    if leads and flip.drain_to_old_first and old is not None and new is not None and mapping is not None:
        late, pending, _ = drain_to_old(old, new, store, mapping, migration)
        result.drained_to_old += len(late)
        if pending:
            result.note += f"; {pending} write(s) queued new -> old at the flip stay queued in that direction"
    enter_rolled_back(store, migration, actor, reason, result)
    return result
