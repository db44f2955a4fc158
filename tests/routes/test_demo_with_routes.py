"""``shiftover demo --with-routes``: the table move, then the route move of ``GET /orders/<id>``
from the monolith to the new service through a real haproxy, readers going through it the whole
time; without haproxy it refuses before creating anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftover.control.store import open_store
from shiftover.errors import ShiftoverError

from .conftest import require_haproxy


def test_the_demo_moves_the_orders_route_after_the_table(prefect_harness: None, tmp_path: Path) -> None:
    from shiftover.demo.run import run_demo

    require_haproxy()
    workdir = tmp_path / "demo"
    report = run_demo(rows=2000, workdir=workdir, requests_per_second=100, with_routes=True)
    assert report.final_differences == 0
    assert report.routes is not None
    assert [s.split(".", 1)[1] for s in report.routes.ran] == [
        "requires",
        "pass_through",
        "dark_launch",
        "canary_50pct",
        "switch",
        "retire_old",
    ]
    assert report.routes.failures == [] and report.routes.requests > 50
    assert report.routes.percent_new == 100 and not report.routes.old_present
    store = open_store(f"sqlite:///{workdir.resolve()}/control.db")
    approvals = store.audit_entries("orders-v2-routes", "approval")
    assert [a["detail"]["step"] for a in approvals] == ["orders_reads.switch", "orders_reads.retire_old"]
    assert all(a["detail"]["automatic"] for a in approvals)  # the demo's route spec names no approvers
    assert "Route move GET /orders/<id>" in report.render()


def test_with_routes_refuses_without_haproxy_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shiftover.demo.routes
    from shiftover.demo.run import run_demo

    monkeypatch.setattr(shiftover.demo.routes.shutil, "which", lambda name: None)
    with pytest.raises(ShiftoverError, match="install-gateway"):
        run_demo(rows=10, workdir=tmp_path / "demo", with_routes=True)
    assert not (tmp_path / "demo").exists()
