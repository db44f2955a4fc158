"""Stage 5: stop writing the old table, archive it, soak for a retention period, and drop it
after a second approval. Every step is audited; a re-run resumes at the first step not yet done.

    writes_switched --approval--> old_writes_stopped --(triggers removed, renamed, Parquet)--> archived
        --retention period, approval--> decommissioned (archive dropped, routing flags removed)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.cutover import ApprovalWait, approve_stage
from flows.runtime import actor, require_phase
from shiftover import decommission as retire
from shiftover.connect import get_engine
from shiftover.control.store import DEFAULT_URL, open_store, utcnow
from shiftover.migration import Migration
from shiftover.phases import Phase
from shiftover.plan import Stage, build_plan
from shiftover.preflight import resolve_mapping
from shiftover.spec import load_spec
from tasks import routing as flips
from tasks.gates import check_gates

DECOMMISSION_FROM = {Phase.WRITES_SWITCHED, Phase.OLD_WRITES_STOPPED, Phase.ARCHIVED}


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
def archive_old_table(migration: Migration) -> str:
    src = migration.spec.source
    name = retire.archive_table(migration.spec)
    retire.rename_table(migration.source, src.table, name, src.schema_name)
    return name


@task(name="export-archive", cache_policy=NO_CACHE, retries=1)
def export_archive(migration: Migration, directory: str) -> dict[str, Any]:
    spec = migration.spec
    done = retire.export_parquet(migration.source, retire.archive_table(spec), directory, spec.source.schema_name)
    return {"path": done.path, "rows": done.rows}


@task(name="drop-archive", cache_policy=NO_CACHE)
def drop_archive(migration: Migration) -> bool:
    spec = migration.spec
    return retire.drop_table(migration.source, retire.archive_table(spec), spec.source.schema_name)


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
    migration = open_for_decommission(spec_path, control_url)
    store, name = migration.store, migration.name
    phase = store.phase(name)
    if phase is Phase.DECOMMISSIONED:
        return {"phase": phase, "note": "already decommissioned"}
    require_phase(name, phase, DECOMMISSION_FROM, Phase.OLD_WRITES_STOPPED)
    stages = {s.name: s for s in build_plan(migration.spec) if s.flow == "decommission"}
    wait = ApprovalWait(approval_timeout_seconds, poll_interval_seconds, auto_approve, suspend)
    if phase is Phase.WRITES_SWITCHED:
        approve_stage(migration, stages["stop_old_writes"], [], wait)
        flips.stop_old_writes(control_url, name, actor())
        store.advance_to(name, Phase.OLD_WRITES_STOPPED, actor(), "old table no longer written")
    if store.phase(name) is Phase.OLD_WRITES_STOPPED:
        archive(migration, stages["archive"], export_parquet or migration.spec.archive.export_parquet)
    retention = (
        timedelta(days=migration.spec.archive.retention_days)
        if retention_seconds is None
        else timedelta(seconds=retention_seconds)
    )
    due = phase_entered(migration, Phase.ARCHIVED) + retention
    if utcnow() < due:
        store.audit(name, actor(), "retention", {"drop_due": due.isoformat()})
        get_run_logger().info("archive kept until %s; run decommission again after that", due.isoformat())
        return {"phase": Phase.ARCHIVED, "drop_due": due.isoformat()}
    approve_stage(migration, stages["drop"], [], wait)
    dropped = drop_archive(migration)
    store.audit(name, actor(), "drop", {"table": retire.archive_table(migration.spec), "dropped": dropped})
    removed = retire.remove_routing_flags(store.engine, name, actor())
    store.advance_to(name, Phase.DECOMMISSIONED, actor(), f"archive dropped; flags removed: {', '.join(removed)}")
    return {"phase": Phase.DECOMMISSIONED, "flags_removed": removed}


def open_for_decommission(spec_path: str, control_url: str) -> Migration:
    """The migration, checked against its databases; once archived, against the archive table
    (the old table's name no longer exists), keeping the spec as declared."""
    spec = load_spec(spec_path)
    store = open_store(control_url)
    checked = spec
    if store.register(spec.name, spec.model_dump(mode="json", by_alias=True)) is Phase.ARCHIVED:
        checked = spec.model_copy(
            update={"source": spec.source.model_copy(update={"table": retire.archive_table(spec)})}
        )
    return Migration(
        spec=spec,
        mapping=resolve_mapping(checked),
        source=get_engine(spec.source.url),
        target=get_engine(spec.target.url),
        store=store,
    )


def archive(migration: Migration, stage: Stage, parquet_dir: str | None) -> None:
    """Triggers off, old table renamed as the archive, optionally exported: each step audited."""
    store, name = migration.store, migration.name
    check_gates(migration, "decommission", stage.gates, actor=actor())
    if remove_capture(migration):
        store.audit(name, actor(), "capture", {"removed": True})
    archived = archive_old_table(migration)
    store.audit(name, actor(), "archive", {"table": archived})
    if parquet_dir:
        exported = export_archive(migration, parquet_dir)
        store.audit(name, actor(), "export", exported)
    store.advance_to(name, Phase.ARCHIVED, actor(), f"old table renamed to {archived}")


def phase_entered(migration: Migration, phase: Phase) -> datetime:
    """When the migration last entered ``phase`` (from the audit log)."""
    entries = [h for h in migration.store.history(migration.name) if h.phase == phase]
    return entries[-1].at
