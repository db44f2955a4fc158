"""Stage 5, decommission: stop writing the old table (approval), archive it, and drop it after the
retention period and a second approval. None of these can be undone; each is audited, and a re-run
resumes at the first one not done.

    writes_switched --approval--> old_writes_stopped --(triggers removed, renamed, Parquet)--> archived
        --retention period, approval--> decommissioned (archive dropped, routing flags removed)
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shiftover import decommission as retire
from shiftover.control.store import DEFAULT_URL
from shiftover.flows.context import RunContext, RunOptions, retention_wait
from shiftover.flows.evaluate import Outcome, run_plan
from shiftover.migration import Migration
from shiftover.phases import Phase
from shiftover.plan import ArchiveStage, DropStage, StopOldWritesStage
from shiftover.tasks import routing as flips


@task(name="remove-capture", cache_policy=NO_CACHE)
def remove_capture(migration: Migration) -> bool:
    """Drop the change-capture triggers on the old table, if they were installed."""
    from shiftover.capture.changelog import capture_installed
    from shiftover.capture.changelog import remove_capture as drop_triggers

    if not capture_installed(migration.source, migration.mapping):
        return False
    drop_triggers(migration.source, migration.mapping)
    return True


@task(name="archive-old-table", cache_policy=NO_CACHE)
def archive_old_table(migration: Migration, archive: str) -> str:
    src = migration.spec.source
    retire.rename_table(migration.source, src.table, archive, src.schema_name)
    return archive


@task(name="export-archive", cache_policy=NO_CACHE, retries=1)
def export_archive(migration: Migration, archive: str, directory: str) -> dict[str, Any]:
    done = retire.export_parquet(migration.source, archive, directory, migration.spec.source.schema_name)
    return {"path": done.path, "rows": done.rows}


@task(name="drop-archive", cache_policy=NO_CACHE)
def drop_archive(migration: Migration, archive: str) -> bool:
    return retire.drop_table(migration.source, archive, migration.spec.source.schema_name)


@flow(name="decommission")
def decommission(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    retention_seconds: float | None = None,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
    export_parquet: str | None = None,
    suspend: bool | None = None,
) -> dict[str, object]:
    """Retire the old table. The drop waits for the retention period and a second approval.

    ``export_parquet`` (a directory; default: the spec's ``archive.export_parquet``) writes the
    archive to Parquet before the retention period starts.
    """
    options = RunOptions(
        retention_seconds=retention_seconds,
        approval_timeout_seconds=approval_timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        auto_approve=auto_approve,
        export_parquet=export_parquet,
        suspend=suspend,
    )
    return run_plan(spec_path, control_url, options, flows={"decommission"})


def run_stop_old_writes(ctx: RunContext, stage: StopOldWritesStage) -> Outcome:
    flips.stop_old_writes(ctx.store.engine, ctx.name, ctx.actor, ctx.lease)
    return Outcome(True, "old table no longer written")


def run_archive(ctx: RunContext, stage: ArchiveStage) -> Outcome:
    """Triggers off, old table renamed as the archive, optionally exported: each step audited."""
    m, name = ctx.migration, ctx.name
    if remove_capture(m):
        ctx.store.audit(name, ctx.actor, "capture", {"removed": True})
    archived = archive_old_table(m, stage.archive_table)
    ctx.store.audit(name, ctx.actor, "archive", {"table": archived})
    parquet = ctx.options.export_parquet or stage.export_parquet
    if parquet:
        ctx.store.audit(name, ctx.actor, "export", export_archive(m, archived, parquet))
    return Outcome(True, f"old table renamed to {archived}", {"archive": archived})


def drop_due(ctx: RunContext, stage: DropStage) -> str | None:
    """Why the drop must wait (its retention period runs until ...), or None when it is due."""
    seconds = stage.retention_seconds if ctx.options.retention_seconds is None else ctx.options.retention_seconds
    waiting = retention_wait(ctx, Phase.ARCHIVED, seconds, "the archive is")
    if waiting:
        get_run_logger().info("%s", waiting)
    return waiting


def run_drop(ctx: RunContext, stage: DropStage) -> Outcome:
    dropped = drop_archive(ctx.migration, stage.archive_table)
    ctx.store.audit(ctx.name, ctx.actor, "drop", {"table": stage.archive_table, "dropped": dropped})
    removed = retire.remove_routing_flags(ctx.store.engine, ctx.name, ctx.actor)
    return Outcome(True, f"archive dropped; flags removed: {', '.join(removed)}", {"flags_removed": removed})
