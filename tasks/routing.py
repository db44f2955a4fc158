"""Prefect tasks that flip a migration's routing flags, each fenced by the run's lease (a run a
rollback has overtaken flips nothing). Flag writes are idempotent, so the reversible ones are
retried on a lost connection; the irreversible ones are not retried (ARCHITECTURE.md, Conventions)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from shiftover import cutover
from shiftover.control.store import Fence
from shiftover.cutover import WriteSwitch
from shiftover.errors import ShiftoverError


def _transient(task: object, run: object, state: object) -> bool:
    """Retry only what is not one of Shiftover's own refusals (a lost lease will not come back)."""
    try:
        state.result()  # type: ignore[attr-defined]
    except ShiftoverError:
        return False
    except Exception:
        return True
    return False


@task(name="enable-dual-write", retries=2, retry_delay_seconds=1, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def enable_dual_write(store: Engine, migration: str, actor: str, fence: Fence) -> None:
    cutover.enable_dual_write(store, migration, actor, fence)


@task(name="shadow-reads", retries=2, retry_delay_seconds=1, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def start_shadow_reads(store: Engine, migration: str, actor: str, fence: Fence) -> None:
    cutover.start_shadow_reads(store, migration, actor, fence)


@task(name="move-reads", retries=2, retry_delay_seconds=1, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def move_reads(store: Engine, migration: str, percent: float, actor: str, fence: Fence) -> None:
    cutover.move_reads(store, migration, percent, actor, fence)


@task(name="switch-writes", cache_policy=NO_CACHE)
def switch_writes(store: Engine, migration: str, actor: str, fence: Fence) -> WriteSwitch:
    return cutover.switch_writes(store, migration, actor, fence=fence)


@task(name="stop-old-writes", cache_policy=NO_CACHE)
def stop_old_writes(store: Engine, migration: str, actor: str, fence: Fence) -> None:
    cutover.stop_old_writes(store, migration, actor, fence)
