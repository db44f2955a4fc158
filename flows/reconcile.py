"""The reconciliation drain: re-copy every queued key from the current source of truth.

Deployed on an interval; the ``reconcile_drained`` gate requires its queue to be empty before
cutover. Keys that keep failing move to ``dead`` after ``max_attempts`` drains and show in
this flow's artifact and in the gate's report.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from shiftover.connect import redact
from shiftover.control.store import DEFAULT_URL, store_knowing
from shiftover.flows.credentials import admit_control_url
from shiftover.migration import load_migration, what_starts
from shiftover.phases import Phase, is_at_least
from shiftover.reconcile import DrainResult, dead_entries
from shiftover.spec import load_spec
from shiftover.story import artifact_key
from shiftover.tasks import reconcile as steps


@flow(name="reconcile")
def reconcile(spec_path: str, control_url: str = DEFAULT_URL, max_keys: int = 10_000, max_attempts: int = 5) -> dict:
    """Drain up to ``max_keys`` queued keys; returns the drain's counts and the queue depth after it.

    A migration whose old table is archived has nothing left to reconcile (the schedule keeps firing
    for it): it says so instead of failing on the renamed table. So does a migration the control
    store does not know (not started yet, a typo'd name, another store), writing nothing: the drain
    only serves a started migration and never starts one, and a schedule failing every interval
    would be noise."""
    admit_control_url(control_url)
    spec = load_spec(spec_path)
    store = store_knowing(control_url, spec.name)  # none there: nothing is created
    if store is None:
        where = f"no migration {spec.name!r} in the control store {redact(control_url)}"
        note = f"not started: nothing to reconcile ({where})"
        get_run_logger().info("%s: %s; %s", spec.name, note, what_starts(spec))
        return {"migration": spec.name, "phase": None, "note": note}
    if is_at_least(store.phase(spec.name), Phase.ARCHIVED):
        return {"migration": spec.name, "phase": store.phase(spec.name), "note": "archived: nothing to reconcile"}
    migration = load_migration(spec_path, control_url, register=False, needed_by="the 'reconcile' flow")
    before = steps.depth(migration)
    drained = steps.drain(migration, max_keys, max_attempts) if before["pending"] else DrainResult("none").as_dict()
    after = steps.depth(migration)
    log = get_run_logger()
    log.info("%s: drained %d key(s) %s; queue now %s", migration.name, drained["synced"], drained["direction"], after)
    create_markdown_artifact(
        key=artifact_key(migration.name, "reconcile"),
        markdown=(
            f"### Reconciliation of `{migration.name}`\n\n| | pending | dead |\n|---|---|---|\n"
            f"| before | {before['pending']} | {before['dead']} |\n| after | {after['pending']} | {after['dead']} |\n\n"
            f"Direction {drained['direction']}: {drained['synced']} key(s) copied, {drained['failed']} failed, "
            f"{drained['dead']} moved to dead."
        ),
        description="reconciliation drain",
    )
    if after["dead"]:
        log.warning("%d dead key(s): fix the cause, then shiftover.reconcile.retry_dead", after["dead"])
        create_table_artifact(
            key=artifact_key(migration.name, "dead-keys"),
            table=[{k: str(v) for k, v in d.items()} for d in dead_entries(migration.store.engine, migration.name)],
            description="dead-lettered keys",
        )
    return {"before": before, "after": after, **drained}
