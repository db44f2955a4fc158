"""Prefect tasks that flip a migration's routing flags. Flag writes are idempotent, so a
retry is safe; the irreversible ones are not retried (ARCHITECTURE.md, Conventions)."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiftover import cutover
from shiftover.connect import get_engine
from shiftover.cutover import WriteSwitch


@task(name="enable-dual-write", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def enable_dual_write(control_url: str, migration: str, actor: str) -> None:
    cutover.enable_dual_write(get_engine(control_url), migration, actor)


@task(name="shadow-reads", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def start_shadow_reads(control_url: str, migration: str, actor: str) -> None:
    cutover.start_shadow_reads(get_engine(control_url), migration, actor)


@task(name="move-reads", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def move_reads(control_url: str, migration: str, percent: float, actor: str) -> None:
    cutover.move_reads(get_engine(control_url), migration, percent, actor)


@task(name="switch-writes", cache_policy=NO_CACHE)
def switch_writes(control_url: str, migration: str, actor: str) -> WriteSwitch:
    return cutover.switch_writes(get_engine(control_url), migration, actor)


@task(name="stop-old-writes", cache_policy=NO_CACHE)
def stop_old_writes(control_url: str, migration: str, actor: str) -> None:
    cutover.stop_old_writes(get_engine(control_url), migration, actor)


@task(name="rollback-routing", retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def rollback_routing(
    control_url: str, migration: str, actor: str, reason: str, keep_dual_write: bool = True
) -> datetime:
    return cutover.rollback_routing(get_engine(control_url), migration, actor, reason, keep_dual_write=keep_dual_write)
