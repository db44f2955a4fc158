"""Repair: re-copy differing keys from the source of truth, audited, then re-check them.

Each round syncs the keys still differing (``rowsync.sync_keys``: upsert rows the source
has, delete extras it lacks) and re-diffs just those keys; it stops when none differ or
after ``max_repair_rounds`` (a live writer can keep a key moving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from shiftover.control.store import ControlStore
from shiftover.diff.failures import mark_repaired
from shiftover.diff.report import Difference, Key
from shiftover.diff.tables import diff_keys
from shiftover.mapping import TableMapping
from shiftover.rowsync import sync_keys
from shiftover.spec import ValidationSpec


@dataclass
class RepairResult:
    rounds: int = 0
    upserted: int = 0
    deleted: int = 0
    remaining: list[Difference] = field(default_factory=list)  # still differing after the last round

    @property
    def complete(self) -> bool:
        return not self.remaining


def repair(
    source: Engine,
    target: Engine,
    mapping: TableMapping,
    options: ValidationSpec,
    differences: Sequence[Difference],
    *,
    store: ControlStore | None = None,
    migration: str = "",
    run_id: str | None = None,
    actor: str = "shiftover",
) -> RepairResult:
    """Sync the differing keys and re-diff them, up to ``options.max_repair_rounds`` rounds."""
    result = RepairResult(remaining=list(differences))
    while result.remaining and result.rounds < max(1, options.max_repair_rounds):
        keys: list[Key] = [d.key for d in result.remaining]
        synced = sync_keys(source, target, mapping, keys)
        result.rounds += 1
        result.upserted += synced.upserted
        result.deleted += synced.deleted
        after = diff_keys(source, target, mapping, options, keys)
        fixed = _fixed(keys, after.differences)
        if store is not None:
            _audit(store, migration, actor, result.rounds, synced.upserted, synced.deleted, keys, after.differences)
            if run_id is not None and fixed:
                mark_repaired(store.engine, migration, run_id, fixed)
        result.remaining = after.differences
    return result


def _fixed(keys: Sequence[Key], still: Sequence[Difference]) -> list[Key]:
    left = {str(d.key) for d in still}
    return [k for k in keys if str(k) not in left]


def _audit(
    store: ControlStore,
    migration: str,
    actor: str,
    round_no: int,
    upserted: int,
    deleted: int,
    keys: Sequence[Key],
    still: Sequence[Difference],
) -> None:
    store.audit(
        migration,
        actor,
        "repair",
        {
            "round": round_no,
            "keys": len(keys),
            "upserted": upserted,
            "deleted": deleted,
            "still_differing": len(still),
            "sample": [list(k) for k in keys[:20]],
        },
    )
