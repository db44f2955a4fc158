"""The reconciliation queue: keys whose secondary write failed, drained from the source of truth.

The dual-writer enqueues ``(migration, key, op, direction)`` whenever the other store could not
be made equal; ``direction`` is fixed when the write fails (old -> new while old is primary,
new -> old once new is), because the store that was the source of truth *for that write* holds
its value: deciding it at drain time would copy a stale old row over the only copy of a write
made after the switch, once a rollback has flipped the mode back. For each key the newest entry
decides. ``drain_queue`` re-copies keys with ``rowsync.sync_keys``, retries failed keys on later
drains, and moves a key to ``dead`` after ``max_attempts`` failures. A drain is idempotent:
copying a key that is already equal changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import key_from_json, key_to_json, utcnow
from shiftover.errors import describe_error
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.mapping import ColumnMap, TableMapping
from shiftover.rowsync import Key, sync_keys

PENDING, DONE, DEAD = "pending", "done", "dead"
OLD_TO_NEW, NEW_TO_OLD = "old->new", "new->old"
_q = schema.reconcile_queue


@dataclass(frozen=True)
class Entry:
    id: int
    key: Key
    op: str
    attempts: int
    direction: str | None = None  # None: queued before directions were recorded


@dataclass
class DrainResult:
    direction: str  # "old->new" | "new->old" | "none"
    synced: int = 0  # keys made equal
    failed: int = 0  # keys that failed this time (left pending)
    dead: int = 0  # keys moved to dead this time
    entries: int = 0  # queue rows consumed
    errors: list[str] = field(default_factory=list)
    synced_keys: list[Key] = field(default_factory=list)  # for a scoped re-check (not in as_dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "synced": self.synced,
            "failed": self.failed,
            "dead": self.dead,
            "entries": self.entries,
            "errors": self.errors[:20],
        }


def enqueue(
    store_engine: Engine,
    migration: str,
    items: Iterable[tuple[Key, str]],
    error: str | None = None,
    direction: str | None = None,
) -> int:
    """Record keys (with their op, ``upsert`` or ``delete``) for reconciliation; one transaction.

    ``direction`` (``old->new`` | ``new->old``): from the store that was the source of truth
    for the failed write to the other one."""
    if direction not in (None, OLD_TO_NEW, NEW_TO_OLD):
        raise ValueError(f"direction must be {OLD_TO_NEW!r} or {NEW_TO_OLD!r}, not {direction!r}")
    now = utcnow()
    rows = [
        {
            "migration": migration,
            "key_json": key_to_json(key),
            "op": op,
            "direction": direction,
            "state": PENDING,
            "attempts": 0,
            "last_error": error[:2000] if error else None,
            "enqueued_at": now,
            "updated_at": now,
        }
        for key, op in items
    ]
    if rows:
        with store_engine.begin() as conn:
            conn.execute(_q.insert(), rows)
    return len(rows)


def queue_depth(store_engine: Engine, migration: str) -> dict[str, int]:
    """Queue rows by state: ``{"pending": n, "dead": n, "done": n}`` (zeros included)."""
    query = sa.select(_q.c.state, sa.func.count()).where(_q.c.migration == migration).group_by(_q.c.state)
    depth = {PENDING: 0, DEAD: 0, DONE: 0}
    with store_engine.connect() as conn:
        for state, count in conn.execute(query):
            depth[state] = int(count)
    return depth


def pending_entries(store_engine: Engine, migration: str, limit: int, after_id: int = 0) -> list[Entry]:
    query = (
        sa.select(_q.c.id, _q.c.key_json, _q.c.op, _q.c.attempts, _q.c.direction)
        .where(_q.c.migration == migration, _q.c.state == PENDING, _q.c.id > after_id)
        .order_by(_q.c.id)
        .limit(limit)
    )
    with store_engine.connect() as conn:
        return [Entry(r.id, key_from_json(r.key_json), r.op, r.attempts, r.direction) for r in conn.execute(query)]


def dead_entries(store_engine: Engine, migration: str, limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered keys with their last error, for reports."""
    query = (
        sa.select(_q.c.key_json, _q.c.op, _q.c.attempts, _q.c.last_error)
        .where(_q.c.migration == migration, _q.c.state == DEAD)
        .order_by(_q.c.id)
        .limit(limit)
    )
    with store_engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def retry_dead(store_engine: Engine, migration: str) -> int:
    """Put dead-lettered keys back to pending with a fresh attempt count (after fixing the cause)."""
    with store_engine.begin() as conn:
        return conn.execute(
            _q.update()
            .where(_q.c.migration == migration, _q.c.state == DEAD)
            .values(state=PENDING, attempts=0, updated_at=utcnow())
        ).rowcount


def reverse_mapping(mapping: TableMapping) -> TableMapping:
    """The mapping from the new table back to the old one; only renames can be reversed."""
    require_reversible(mapping)
    return TableMapping(
        source_table=mapping.target_table,
        target_table=mapping.source_table,
        source_schema=mapping.target_schema,
        target_schema=mapping.source_schema,
        key=mapping.target_key,
        columns=tuple(ColumnMap(source=c.target, target=c.source) for c in mapping.columns),
    )


def require_reversible(mapping: TableMapping) -> None:
    """New can only be the source of truth when old rows can be rebuilt from new ones."""
    from shiftover.errors import SpecError

    if mapping.transform is not None:
        raise SpecError(
            "transform",
            "a Python transform cannot be reversed, so the new store cannot become "
            "primary while the old one is still written; keep old primary or drop the transform",
        )
    computed = [c.target for c in mapping.columns if c.sql is not None]
    if computed:
        raise SpecError(
            "columns",
            f"column(s) {computed} are computed by SQL and cannot be written back to the "
            "old table; new-primary dual-write needs a mapping of renames only",
        )


def drain_direction(store_engine: Engine, migration: str) -> str:
    """The direction the write mode gives entries queued without one (and ``none`` once the old
    store is no longer written)."""
    mode = read_routing(store_engine, migration).writes
    if mode == WriteMode.NEW_ONLY:
        return "none"
    return NEW_TO_OLD if mode == WriteMode.DUAL_NEW_PRIMARY else OLD_TO_NEW


def pending_by_direction(store_engine: Engine, migration: str) -> dict[str, int]:
    """Pending keys per direction (entries without one count under the write mode's)."""
    fallback = drain_direction(store_engine, migration)
    query = (
        sa.select(_q.c.direction, sa.func.count())
        .where(_q.c.migration == migration, _q.c.state == PENDING)
        .group_by(_q.c.direction)
    )
    counts: dict[str, int] = {}
    with store_engine.connect() as conn:
        for direction, n in conn.execute(query):
            name = direction or fallback
            counts[name] = counts.get(name, 0) + int(n)
    return counts


def drain_queue(
    source: Engine,
    target: Engine,
    store_engine: Engine,
    mapping: TableMapping,
    migration: str,
    *,
    max_keys: int = 10_000,
    batch: int = 500,
    max_attempts: int = 5,
    only: str | None = None,
) -> DrainResult:
    """Re-copy up to ``max_keys`` queued keys, each from the store its newest entry names.

    ``source``/``target`` are the migration's old and new engines. Entries queued without a
    direction follow the write mode; in new-only mode the old store is no longer written, so
    old-bound entries are closed. ``only`` drains one direction and leaves the other pending.
    """
    fallback = drain_direction(store_engine, migration)
    result = DrainResult(only or fallback)
    last_id = 0  # each entry is tried once per drain; failures wait for the next one
    while result.entries < max_keys:
        entries = pending_entries(store_engine, migration, min(batch, max_keys - result.entries), last_id)
        if not entries:
            break
        last_id = entries[-1].id
        for direction, group in _by_direction(store_engine, migration, entries, fallback).items():
            if only is not None and direction != only:
                continue
            result.entries += len(group)
            if fallback == "none":  # the old store is no longer written: nothing to reconcile
                _finish(store_engine, [e.id for e in group], DONE)
            elif direction == NEW_TO_OLD:
                _drain_batch(target, source, reverse_mapping(mapping), store_engine, group, max_attempts, result)
            else:
                _drain_batch(source, target, mapping, store_engine, group, max_attempts, result)
    return result


def _by_direction(
    store_engine: Engine, migration: str, entries: Sequence[Entry], fallback: str
) -> dict[str, list[Entry]]:
    """Entries grouped by the direction of their key's newest pending entry, over the whole queue
    (not this batch only): the last failed write decides which store holds the key's value."""
    newest: dict[Key, str] = {}
    texts = sorted({key_to_json(e.key) for e in entries})
    query = (
        sa.select(_q.c.key_json, _q.c.direction)
        .where(_q.c.migration == migration, _q.c.state == PENDING, _q.c.key_json.in_(texts))
        .order_by(_q.c.id)
    )
    with store_engine.connect() as conn:
        for key_json, direction in conn.execute(query):
            newest[key_from_json(key_json)] = direction or fallback
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(newest.get(e.key, e.direction or fallback), []).append(e)
    return groups


def _drain_batch(
    src: Engine,
    dst: Engine,
    mapping: TableMapping,
    store: Engine,
    entries: Sequence[Entry],
    max_attempts: int,
    result: DrainResult,
) -> None:
    by_key: dict[Key, list[Entry]] = {}
    for e in entries:
        by_key.setdefault(e.key, []).append(e)
    try:
        sync_keys(src, dst, mapping, list(by_key))
    except Exception:
        unreachable = 0
        for key, group in by_key.items():
            if unreachable >= 3:  # a store that is down fails every key alike: stop knocking
                _record_failure(store, key, group, max_attempts, result, "skipped: store unreachable")
                continue
            error = _drain_one(src, dst, mapping, store, key, group, max_attempts, result)
            unreachable = unreachable + 1 if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError) else 0
        return
    _finish(store, [e.id for e in entries], DONE)
    result.synced += len(by_key)
    result.synced_keys.extend(by_key)


def _drain_one(
    src: Engine,
    dst: Engine,
    mapping: TableMapping,
    store: Engine,
    key: Key,
    group: list[Entry],
    max_attempts: int,
    result: DrainResult,
) -> Exception | None:
    try:
        sync_keys(src, dst, mapping, [key])
    except Exception as exc:
        error = describe_error(exc)
        _record_failure(store, key, group, max_attempts, result, error)
        return exc
    _finish(store, [e.id for e in group], DONE)
    result.synced += 1
    result.synced_keys.append(key)
    return None


def _record_failure(
    store: Engine, key: Key, group: list[Entry], max_attempts: int, result: DrainResult, error: str
) -> None:
    result.errors.append(f"{key_to_json(key)}: {error}")
    attempts = max(e.attempts for e in group) + 1
    state = DEAD if attempts >= max_attempts else PENDING
    with store.begin() as conn:
        conn.execute(
            _q.update()
            .where(_q.c.id.in_([e.id for e in group]))
            .values(attempts=attempts, state=state, last_error=error[:2000], updated_at=utcnow())
        )
    if state == DEAD:
        result.dead += 1
    else:
        result.failed += 1


def _finish(store: Engine, ids: list[int], state: str) -> None:
    with store.begin() as conn:
        for i in range(0, len(ids), 500):
            conn.execute(_q.update().where(_q.c.id.in_(ids[i : i + 500])).values(state=state, updated_at=utcnow()))
