"""Stage 5: stop writing the old table, archive it, and drop it after a retention period and
a second approval. Every step is audited; a re-run resumes at the first step not yet done."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.cutover import approval_summary
from flows.runtime import actor, require_phase
from shiftover import decommission as retire
from shiftover.approvals import request_approval
from shiftover.control.store import DEFAULT_URL, utcnow
from shiftover.migration import Migration, load_migration
from shiftover.phases import Phase
from shiftover.plan import Stage, build_plan
from tasks import routing as flips
from tasks.gates import check_gates

DECOMMISSION_FROM = {Phase.WRITES_SWITCHED, Phase.OLD_WRITES_STOPPED, Phase.ARCHIVED}


@task(name="archive-old-table", cache_policy=NO_CACHE)
def archive_old_table(migration: Migration) -> str:
    src = migration.spec.source
    name = retire.archive_name(src.table, migration.spec.archive.suffix)
    retire.rename_table(migration.source, src.table, name, src.schema_name)
    return name


@task(name="drop-archive", cache_policy=NO_CACHE)
def drop_archive(migration: Migration) -> bool:
    src = migration.spec.source
    return retire.drop_table(migration.source, retire.archive_name(src.table, migration.spec.archive.suffix),
                             src.schema_name)


@flow(name="decommission")
def decommission(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    retention_seconds: float | None = None,
    approval_timeout_seconds: float | None = None,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
) -> dict[str, object]:
    """Retire the old table. The drop waits for the retention period and an approval."""
    migration = load_migration(spec_path, control_url, require_target=True)
    store, name = migration.store, migration.name
    phase = store.phase(name)
    if phase is Phase.DECOMMISSIONED:
        return {"phase": phase, "note": "already decommissioned"}
    require_phase(name, phase, DECOMMISSION_FROM, Phase.OLD_WRITES_STOPPED)
    stages = {s.name: s for s in build_plan(migration.spec) if s.flow == "decommission"}
    approval = dict(approvers=migration.spec.approvals.approvers, poll_interval_seconds=poll_interval_seconds,
                    auto_approve=auto_approve,
                    timeout_seconds=approval_timeout_seconds or migration.spec.approvals.timeout_seconds)
    if phase is Phase.WRITES_SWITCHED:
        _approve(migration, stages["stop_old_writes"], approval)
        flips.stop_old_writes(control_url, name, actor())
        store.advance_to(name, Phase.OLD_WRITES_STOPPED, actor(), "old table no longer written")
    if store.phase(name) is Phase.OLD_WRITES_STOPPED:
        check_gates(migration, "decommission", stages["archive"].gates)
        archived = archive_old_table(migration)
        store.advance_to(name, Phase.ARCHIVED, actor(), f"old table renamed to {archived}")
    retention = timedelta(days=migration.spec.archive.retention_days) if retention_seconds is None \
        else timedelta(seconds=retention_seconds)
    archived_at = _phase_entered(migration, Phase.ARCHIVED)
    if utcnow() - archived_at < retention:
        due = archived_at + retention
        get_run_logger().info("archive kept until %s; run decommission again after that", due.isoformat())
        return {"phase": Phase.ARCHIVED, "drop_due": due.isoformat()}
    _approve(migration, stages["drop"], approval)
    drop_archive(migration)
    store.advance_to(name, Phase.DECOMMISSIONED, actor(), "archive dropped")
    return {"phase": Phase.DECOMMISSIONED}


def _approve(migration: Migration, stage: Stage, approval: dict[str, object]) -> None:
    summary = approval_summary(migration, stage, [])
    request_approval(migration.store, migration.name, stage.name, summary, **approval)  # type: ignore[arg-type]


def _phase_entered(migration: Migration, phase: Phase):  # type: ignore[no-untyped-def]
    entries = [h for h in migration.store.history(migration.name) if h.phase == phase]
    at = entries[-1].at
    return at if at.tzinfo else at.replace(tzinfo=utcnow().tzinfo)
