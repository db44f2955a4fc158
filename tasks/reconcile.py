"""Prefect tasks for the application side: draining the reconciliation queue, replaying the
trigger changelog. Both are idempotent (they copy the current source of truth), so retries are safe."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiftover import capture, reconcile
from shiftover.migration import Migration


@task(name="drain-reconcile-queue", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def drain(migration: Migration, max_keys: int, max_attempts: int = 5) -> dict[str, Any]:
    result = reconcile.drain_queue(
        migration.source,
        migration.target,
        migration.store.engine,
        migration.mapping,
        migration.name,
        max_keys=max_keys,
        max_attempts=max_attempts,
    )
    return result.as_dict()


@task(name="queue-depth", cache_policy=NO_CACHE)
def depth(migration: Migration) -> dict[str, int]:
    return reconcile.queue_depth(migration.store.engine, migration.name)


@task(name="install-capture", cache_policy=NO_CACHE)
def install_capture(migration: Migration) -> str:
    return capture.install_capture(migration.source, migration.mapping).changelog


@task(name="replay-changelog", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def replay(migration: Migration, batch: int, max_changes: int | None = None) -> dict[str, int]:
    result = capture.replay_changelog(
        migration.source, migration.target, migration.mapping, batch=batch, max_changes=max_changes
    )
    return {"changes": result.changes, "keys": result.keys, "batches": result.batches, "remaining": result.remaining}


@task(name="remove-capture", cache_policy=NO_CACHE)
def remove_capture(migration: Migration, keep_changelog: bool = False) -> None:
    capture.remove_capture(migration.source, migration.mapping, keep_changelog=keep_changelog)
