"""``shiftover demo --kind expand_contract``: orders.amount becomes amount_cents in place on SQLite
while an application thread keeps writing, through the expand-contract flow to the end with
automatic approvals; 0 failed writes, and every row's new value checked against up(old) computed
in Python from a plain SELECT (not Shiftover's validate), after validate and before contract."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.control.store import open_store


def test_the_demo_changes_a_column_in_place_under_live_writes(prefect_harness: None, tmp_path: Path) -> None:
    from shiftover.demo.expand import NAME, run_expand_demo

    workdir = tmp_path / "demo"
    report = run_expand_demo(rows=1500, workdir=workdir)
    assert report.ran == [
        "expand", "sync", "backfill", "validate", "switch_reads", "switch_writes", "stop_sync", "drop_old_columns",
    ]  # fmt: skip
    assert report.phase == "decommissioned"
    assert report.failures == []
    assert report.writes["old"] > 0 and report.writes["new"] > 0  # the application wrote through both columns
    assert [c.when for c in report.checks] == ["after validate", "before contract"]
    assert all(c.held for c in report.checks), report.render()
    assert report.checks[0].rows >= 1500
    assert "amount" not in report.columns and "amount_cents" in report.columns
    assert report.rows_end >= 1500 and report.ok
    approvals = open_store(f"sqlite:///{workdir.resolve()}/control.db").audit_entries(NAME, "approval")
    assert [a["detail"]["step"] for a in approvals] == ["stop_sync", "drop_old_columns"]
    assert all(a["detail"]["automatic"] for a in approvals)  # recorded as the run answering itself
    assert "0 failed writes" in report.render()


def test_the_independent_check_catches_a_wrong_new_value(tmp_path: Path) -> None:
    """The check's own arithmetic: one row whose amount_cents is not round(amount * 100) fails it."""
    from shiftover.demo.expand import check_columns

    url = f"sqlite:///{tmp_path / 'orders.db'}"
    with get_engine(url).begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(12, 2), amount_cents BIGINT)")
        )
        conn.execute(sa.text("INSERT INTO orders VALUES (1, 0.29, 29), (2, 12.34, 1234), (3, NULL, NULL)"))
    assert check_columns(url, "now").held
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = 1235 WHERE id = 2"))
    check = check_columns(url, "now")
    assert not check.held and [m[0] for m in check.mismatches] == [2]
