"""Stage 1: turn dual-write on and wait until every application instance has seen it."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.runtime import actor, require_phase
from shiftover.control.store import DEFAULT_URL
from shiftover.migration import Migration, open_migration
from shiftover.phases import Phase, is_at_least
from shiftover.spec import load_spec
from tasks.routing import enable_dual_write


@flow(name="dual-write")
def dual_write(spec_path: str, control_url: str = DEFAULT_URL, flag_ttl_seconds: float = 1.0) -> dict[str, str]:
    """Flip the writes flag to dual-write, then wait two flag TTLs so no write is missed by the backfill."""
    migration = open_with_target(spec_path, control_url)
    phase = migration.store.phase(migration.name)
    if is_at_least(phase, Phase.DUAL_WRITING):
        return {"phase": phase, "note": "dual-write already on"}
    require_phase(migration.name, phase, {Phase.PLANNED, Phase.ROLLED_BACK}, Phase.DUAL_WRITING)
    enable_dual_write(control_url, migration.name, actor())
    time.sleep(2 * flag_ttl_seconds)  # every app instance's flag cache has refreshed by now
    migration.store.advance_to(migration.name, Phase.DUAL_WRITING, actor(), "dual-write on")
    get_run_logger().info("dual-write is on for %s", migration.name)
    return {"phase": Phase.DUAL_WRITING}


def open_with_target(spec_path: str, control_url: str) -> Migration:
    """Open the migration; with ``backfill.create_target`` create the target table first, so
    the dual-writer has somewhere to write before the backfill starts."""
    from shiftover.backfill.typemap import create_target_table
    from shiftover.mapping import forget_reflections
    from shiftover.preflight import check_target

    spec = load_spec(spec_path)
    migration = open_migration(spec, control_url, require_target=not spec.backfill.create_target)
    if spec.backfill.create_target and create_target_table(migration.source, migration.target, migration.mapping):
        forget_reflections()
        migration.store.audit(spec.name, actor(), "create_target", {"table": spec.target.table})
    check_target(spec, migration.mapping)
    return migration
