"""Issue 5 §5: decommission with a soak. The old table is archived (renamed, optionally exported
to Parquet) and kept for the retention period; it is dropped only after a second approval."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from shiftover.errors import ApprovalError
from shiftover.flags.routing import WriteMode, read_flags, read_routing
from shiftover.mapping import forget_reflections
from shiftover.phases import Phase

from .conftest import ROWS, Approver, Setup

pytestmark = pytest.mark.flows

ARCHIVE = "orders_shiftover_archive"


def tables(setup: Setup) -> set[str]:
    forget_reflections()
    return set(sa.inspect(setup.migration.source).get_table_names())


def decommission(setup: Setup, **kw):  # type: ignore[no-untyped-def]
    from shiftover.flows.decommission import decommission as flow

    return flow(setup.spec_path, setup.control_url, poll_interval_seconds=1, approval_timeout_seconds=30, **kw)


def test_archive_is_kept_for_the_retention_period_then_dropped_after_a_second_approval(
    prefect_harness: None,
    make_migration,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    first = Approver("decommission", [{"approver": "alice", "confirm_name": setup.name, "reason": "soaked a week"}])
    first.start()
    kept = decommission(setup, retention_seconds=3600, export_parquet=str(tmp_path / "export"))
    first.join(10)
    assert first.error is None and first.outcomes[0][0] == "accepted"
    assert kept["phase"] == Phase.ARCHIVED and "the archive is kept until" in kept["waiting"]
    assert read_routing(setup.store.engine, setup.name).writes is WriteMode.NEW_ONLY
    assert ARCHIVE in tables(setup) and "orders" not in tables(setup)
    exported = pq.read_table(tmp_path / "export" / f"{ARCHIVE}.parquet")
    assert exported.num_rows == ROWS and "amount" in exported.column_names

    again = decommission(setup, retention_seconds=3600)  # within the retention: no approval asked, nothing dropped
    assert again["phase"] == Phase.ARCHIVED and ARCHIVE in tables(setup)
    assert [a["detail"]["step"] for a in setup.store.audit_entries(setup.name, action="approval_requested")] == [
        "stop_old_writes"
    ]

    second = Approver("decommission", [{"approver": "bob", "confirm_name": setup.name, "reason": "retention over"}])
    second.start()
    done = decommission(setup, retention_seconds=0)
    second.join(10)
    assert second.error is None and done["phase"] == Phase.DECOMMISSIONED
    assert ARCHIVE not in tables(setup)
    approvals = [(a["actor"], a["detail"]["step"]) for a in setup.store.audit_entries(setup.name, action="approval")]
    assert approvals == [("alice", "stop_old_writes"), ("bob", "drop")]
    assert set(read_flags(setup.store.engine, f"{setup.name}:")) == {f"{setup.name}:writes"}
    actions = [a["action"] for a in setup.store.audit_entries(setup.name)]
    for step in ("archive", "export", "retention", "drop", "flags_removed"):
        assert step in actions, step
    assert actions.index("export") < actions.index("retention") < actions.index("drop")


def test_a_drop_without_approval_keeps_the_archive(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    decommission(setup, retention_seconds=3600, auto_approve=True)  # stop old writes, archive
    from shiftover.flows.decommission import decommission as flow

    with pytest.raises(ApprovalError, match="no approval for 'drop'"):
        flow(
            setup.spec_path, setup.control_url, retention_seconds=0, approval_timeout_seconds=2, poll_interval_seconds=1
        )
    assert setup.store.phase(setup.name) is Phase.ARCHIVED and ARCHIVE in tables(setup)


def test_decommission_removes_capture_triggers(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.capture.changelog import capture_installed, install_capture

    setup: Setup = make_migration(Phase.WRITES_SWITCHED)
    install_capture(setup.migration.source, setup.migration.mapping)
    decommission(setup, retention_seconds=3600, auto_approve=True)
    assert not capture_installed(setup.migration.source, setup.migration.mapping)
    with setup.migration.source.connect() as conn:
        triggers = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all()
    assert triggers == []
    assert any(a["detail"].get("removed") for a in setup.store.audit_entries(setup.name, action="capture"))


def test_decommission_refuses_before_the_write_switch(prefect_harness: None, make_migration) -> None:  # type: ignore[no-untyped-def]
    from shiftover.errors import PhaseError

    setup: Setup = make_migration(Phase.READS_SWITCHED)
    with pytest.raises(PhaseError):
        decommission(setup, auto_approve=True)
    assert "orders" in tables(setup)
