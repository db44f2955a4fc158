"""Trigger capture as flows: install the triggers and replay the changelog into the new store
(optionally following it for a while, so it keeps up while the backfill runs), and remove the
triggers at decommission."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from shiftover.control.store import DEFAULT_URL
from shiftover.flows.credentials import admit_control_url
from shiftover.migration import load_migration
from shiftover.tasks import reconcile as steps


@flow(name="capture-replay")
def capture_replay(
    spec_path: str,
    control_url: str = DEFAULT_URL,
    follow_seconds: float = 0.0,
    poll_seconds: float = 1.0,
    batch: int = 1_000,
    install: bool = True,
) -> dict:
    """Replay the changelog until it is empty; with ``follow_seconds`` keep replaying that long."""
    admit_control_url(control_url)
    # capture serves a migration already started (README: "for applications that cannot change", in
    # place of the dual-writer; a stage flow never starts one): a typo'd name installs no triggers
    migration = load_migration(spec_path, control_url, register=False, needed_by="the 'capture-replay' flow")
    audit_actor = "prefect:capture-replay"
    if install:
        changelog = steps.install_capture(migration)
        migration.store.audit(migration.name, audit_actor, "capture", {"installed": changelog})
    totals = {"changes": 0, "keys": 0, "passes": 0}
    deadline = time.monotonic() + follow_seconds
    while True:
        done = steps.replay(migration, batch)
        totals["changes"] += done["changes"]
        totals["keys"] += done["keys"]
        totals["passes"] += 1
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    get_run_logger().info("%s: replayed %d change(s) over %d key(s)", migration.name, totals["changes"], totals["keys"])
    return totals


@flow(name="capture-remove")
def capture_remove(spec_path: str, control_url: str = DEFAULT_URL, keep_changelog: bool = False) -> dict:
    """Replay what is left, then drop the triggers (and the changelog unless kept)."""
    admit_control_url(control_url)
    migration = load_migration(spec_path, control_url, register=False, needed_by="the 'capture-remove' flow")
    left = steps.replay(migration, 1_000)
    steps.remove_capture(migration, keep_changelog)
    migration.store.audit(migration.name, "prefect:capture-remove", "capture", {"removed": True, "replayed": left})
    return {"replayed": left["changes"], "removed": True}
