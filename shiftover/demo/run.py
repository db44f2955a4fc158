"""``shiftover demo``: a full migration of a live orders table between two SQLite files.

The example orders service keeps serving HTTP, driven by its load generator, with its writes
going through the dual-writer from before dual-write is
switched on until after writes have moved; approvals are answered automatically and
recorded as such. It ends with the phase history and a final diff of the two tables.
With ``with_routes`` (``--with-routes``, needs haproxy) the route move follows the table move,
before decommission: ``GET /orders/<id>`` from the monolith to the new service (``demo/routes.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from shiftover.connect import dispose_engines, get_engine
from shiftover.control.store import PhaseChange, open_store
from shiftover.demo.app import LiveApplication, writes
from shiftover.demo.orders import create_orders
from shiftover.demo.routes import RouteDemoReport, require_haproxy, run_route_demo
from shiftover.dualwrite import DualWriter
from shiftover.examples.app.loadgen import LoadStats
from shiftover.expectations import preload_great_expectations
from shiftover.migration import Migration, load_migration
from shiftover.rowsync import count_rows
from shiftover.spec import MigrationSpec, load_spec

EXAMPLE_SPEC = files("shiftover.examples") / "orders.yaml"  # package data (examples/orders.yaml in the checkout)


@dataclass
class DemoReport:
    rows: int
    seconds: float
    history: list[PhaseChange]
    app: LoadStats
    final_differences: int
    rows_old: int
    rows_new: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)
    routes: RouteDemoReport | None = None

    def render(self) -> str:
        lines = ["", "Phase history:"]
        for h in self.history:
            lines.append(f"  {h.at:%H:%M:%S}  {h.phase:<20} {h.actor:<34} {h.reason}")
        lines += [
            "",
            f"The orders service (examples/app) under its load generator during the migration: "
            f"{writes(self.app)} writes and {self.app.ok['get']} reads over HTTP "
            f"({self.app.summary()}); {self.app.total_failed} failed requests",
            f"Reconciliation queue at the end: {self.queue}",
            "Stage times: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items()),
            f"Rows: old {self.rows_old}, new {self.rows_new} (started with {self.rows})",
            f"Final diff old vs new: {self.final_differences} differing rows",
        ]
        if self.routes is not None:
            lines.append(self.routes.render())
        lines.append(f"Done in {self.seconds:.1f}s.")
        return "\n".join(lines)


def prepare(workdir: Path, rows: int) -> tuple[Path, str]:
    """Fresh databases and a spec pointing at them; returns (spec path, control URL)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    old_url, new_url = f"sqlite:///{workdir.resolve()}/old.db", f"sqlite:///{workdir.resolve()}/new.db"
    create_orders(get_engine(old_url), rows=rows)
    create_orders(get_engine(new_url), rows=0)
    data = yaml.safe_load(EXAMPLE_SPEC.read_text())
    data["source"]["url"], data["target"]["url"] = old_url, new_url
    spec_path = workdir / "orders.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    control_url = f"sqlite:///{workdir.resolve()}/control.db"
    open_store(control_url)  # the orchestrator creates the control store before the application starts
    return spec_path, control_url


def run_demo(
    rows: int = 100_000,
    workdir: Path = Path(".shiftover/demo"),
    requests_per_second: float = 200.0,
    watch: Callable[[MigrationSpec, str], AbstractContextManager[Any]] | None = None,
    with_routes: bool = False,
) -> DemoReport:
    """The whole demo; ``watch(spec, control_url)`` is entered around the migration's run (the CLI's
    progress bars on a terminal)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from shiftover.flows.decommission import decommission
    from shiftover.flows.migrate import migrate
    from shiftover.flows.reconcile import reconcile

    if with_routes:
        require_haproxy()  # before anything is created
    started = time.monotonic()
    print(f"Preparing {rows} orders in {workdir}/old.db ...", flush=True)
    spec_path, control_url = prepare(workdir, rows)
    spec = load_spec(spec_path)
    if spec.expectations:  # the import (3 s or more) overlaps the Prefect server's start, not a stage
        preload_great_expectations()
    writer = DualWriter.from_spec(spec, control_url)
    keys = range(1, rows + rows // 20 + 1)  # a twentieth of the writes insert new orders
    app = LiveApplication(writer, keys, requests_per_second=requests_per_second).start()
    stage_seconds: dict[str, float] = {}
    try:
        t = time.monotonic()
        with watch(spec, control_url) if watch is not None else nullcontext():
            migrate(str(spec_path), control_url, auto_approve=True, soak_seconds=1.0, stop_after="cutover")
        stage_seconds["dual-write..cutover"] = time.monotonic() - t
    finally:
        stats = app.stop()
        writer.close()
    t = time.monotonic()
    reconcile(str(spec_path), control_url)
    migration = load_migration(str(spec_path), control_url)
    differences = count_differences(migration)
    stage_seconds["final diff"] = time.monotonic() - t
    rows_old = count_rows(migration.source, migration.mapping.source_table_obj(migration.source))
    rows_new = count_rows(migration.target, migration.mapping.target_table_obj(migration.target))
    routes = None
    if with_routes:  # reads and writes are on the new store now: the route can follow its table
        t = time.monotonic()
        routes = run_route_demo(workdir, spec, control_url, keys=rows)
        stage_seconds["route move"] = time.monotonic() - t
    t = time.monotonic()
    decommission(str(spec_path), control_url, retention_seconds=0, auto_approve=True)
    stage_seconds["decommission"] = time.monotonic() - t
    store = migration.store  # the same control store: no second open (and Alembic check)
    from shiftover.reconcile import queue_depth

    report = DemoReport(
        rows=rows,
        seconds=time.monotonic() - started,
        history=store.history(spec.name),
        app=stats,
        final_differences=differences,
        rows_old=rows_old,
        rows_new=rows_new,
        stage_seconds=stage_seconds,
        queue=queue_depth(store.engine, spec.name),
        routes=routes,
    )
    dispose_engines()
    return report


def count_differences(m: Migration) -> int:
    """A full checksum diff of old against new (no repair): the demo's proof of equality."""
    from shiftover.diff import diff_tables

    return len(diff_tables(m.source, m.target, m.mapping, m.spec.validation).differences)
