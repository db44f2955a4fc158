"""Flows that only serve a started migration (the reconcile drain, capture, the backfill and diff
workers) and ``shiftover throttle`` never start one: a migration the control store does not know
(a typo'd name, a spec not begun, another store) leaves the store exactly as it was, every row of
it, and the old database without capture triggers. The drain says so in a note (its schedule keeps
firing); the others refuse with ``UnknownMigrationError`` naming the migration, the store and what
starts it. SQLite databases under Prefect's test harness."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from shiftover.connect import dispose_engines, get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders, orders_table
from shiftover.errors import UnknownMigrationError
from shiftover.mapping import forget_reflections
from shiftover.phases import Phase

from .conftest import orders_spec

pytestmark = pytest.mark.flows

NAME = "orders-typo"  # the spec's name; the store knows only OTHER


class Setup:
    def __init__(self, tmp_path: Path, control_url: str | None = None) -> None:
        self.old_url, self.new_url = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
        self.old, self.new = get_engine(self.old_url), get_engine(self.new_url)
        create_orders(self.old, rows=20)
        orders_table().create(self.new)
        self.spec_path = str(tmp_path / "spec.yaml")
        Path(self.spec_path).write_text(yaml.safe_dump(orders_spec(NAME, self.old_url, self.new_url)))
        self.control_file = tmp_path / "control.db"
        self.control_url = control_url or f"sqlite:///{self.control_file}"
        self.shown = sa.make_url(self.control_url).render_as_string(hide_password=True)
        store = open_store(self.control_url)
        store.register("other", {"name": "other"})
        store.transition("other", Phase.DUAL_WRITING, "alice", "go")
        store.audit("other", "alice", "note", {"why": "a row the refused call must leave alone"})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A SQLite control store that knows another migration (registered, moved on, audited), not this spec's."""
    yield Setup(tmp_path)
    dispose_engines()
    forget_reflections()


@pytest.fixture
def pg_setup(tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[Setup]:
    """The same with a PostgreSQL control store: what distributed workers need (a SQLite one they refuse)."""
    yield Setup(tmp_path, pg_database())
    dispose_engines()
    forget_reflections()


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a database, in a stable order (independent of the code under test)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            found = {n: sorted(map(repr, conn.execute(sa.text(f'SELECT * FROM "{n}"')))) for n in names}
            if engine.dialect.name == "sqlite":  # triggers too
                found["sqlite_master"] = sorted(
                    map(repr, conn.execute(sa.text("SELECT type, name FROM sqlite_master")))
                )
            return found  # type: ignore[return-value]
    finally:
        engine.dispose()


def refused(call: Callable[[], Any], setup: Setup, flow: str) -> None:
    before, old_before = snapshot(setup.control_url), snapshot(setup.old_url)
    assert any("'other'" in row for row in before["so_migrations"])  # the snapshot reads the real rows
    with pytest.raises(UnknownMigrationError) as caught:
        call()
    message = str(caught.value)
    assert f"no migration '{NAME}' in the control store {setup.shown}" in message
    assert flow in message and "`shiftover run SPEC`" in message and "--stop-after dual_write" in message
    assert "nothing was written" in message
    assert snapshot(setup.control_url) == before
    assert snapshot(setup.old_url) == old_before  # no capture triggers, no changelog table


def test_capture_replay_refuses_an_unknown_migration_and_installs_nothing(prefect_harness: None, setup: Setup) -> None:
    """README: capture is "for applications that cannot change", in place of the dual-writer; no doc
    makes it a way to start a migration, so it refuses like the stage flows do."""
    from shiftover.flows.capture import capture_replay

    refused(lambda: capture_replay(spec_path=setup.spec_path, control_url=setup.control_url), setup, "capture-replay")
    refused(
        lambda: capture_replay(spec_path=setup.spec_path, control_url=setup.control_url, install=False),
        setup,
        "capture-replay",
    )


def test_capture_remove_refuses_an_unknown_migration(prefect_harness: None, setup: Setup) -> None:
    from shiftover.flows.capture import capture_remove

    refused(lambda: capture_remove(spec_path=setup.spec_path, control_url=setup.control_url), setup, "capture-remove")


def test_backfill_worker_refuses_an_unknown_migration(prefect_harness: None, pg_setup: Setup) -> None:
    from shiftover.flows.backfill_worker import backfill_worker

    setup = pg_setup
    refused(lambda: backfill_worker(setup.spec_path, setup.control_url, worker_id="w1"), setup, "backfill-worker")


def test_diff_worker_refuses_an_unknown_migration(prefect_harness: None, pg_setup: Setup) -> None:
    from shiftover.flows.diff_worker import diff_worker

    setup = pg_setup
    job = {"run_id": "r1", "integer_span": [1, 20], "since": None, "since_column": "updated_at"}
    refused(lambda: diff_worker(setup.spec_path, job, setup.control_url, worker_id="w1"), setup, "diff-worker")


def test_worker_processes_refuse_an_unknown_migration(pg_setup: Setup) -> None:
    """What a backfill worker process or Dask task runs (``WorkerJob.run``), and a diff's Dask task."""
    from shiftover.backfill.workers import WorkerJob
    from shiftover.diff.dask_workers import DiffLoop

    setup = pg_setup
    spec = orders_spec(NAME, setup.old_url, setup.new_url)
    refused(lambda: WorkerJob(spec, setup.control_url).run("w1", 5.0), setup, "a backfill worker")
    job = {"run_id": "r1", "integer_span": None, "since": None, "since_column": "updated_at"}
    refused(lambda: DiffLoop(spec, setup.control_url, job, 5.0)("w1"), setup, "a diff worker")


def test_a_diff_worker_process_refuses_an_unknown_migration(pg_setup: Setup) -> None:
    """``python -m shiftover.diff.distributed``, as ``start_diff_workers`` starts it."""
    setup = pg_setup
    before = snapshot(setup.control_url)
    job = {"run_id": "r1", "integer_span": None, "since": None, "since_column": "updated_at"}
    payload = {"spec": orders_spec(NAME, setup.old_url, setup.new_url), "control_url": setup.control_url, "diff": job}
    done = subprocess.run(
        [sys.executable, "-m", "shiftover.diff.distributed", "w1", "5"],
        input=json.dumps(payload) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "UnknownMigrationError" in done.stderr, done.stderr[-2000:]
    assert f"no migration '{NAME}' in the control store {setup.shown}" in done.stderr
    assert snapshot(setup.control_url) == before


def test_reconcile_says_not_started_for_an_unknown_migration_and_writes_nothing(
    prefect_harness: None, setup: Setup
) -> None:
    from shiftover.flows.reconcile import reconcile

    before, old_before = snapshot(setup.control_url), snapshot(setup.old_url)
    result = reconcile(spec_path=setup.spec_path, control_url=setup.control_url)
    assert result["migration"] == NAME and result["phase"] is None
    assert result["note"].startswith("not started: nothing to reconcile")
    assert f"no migration '{NAME}' in the control store sqlite:///{setup.control_file}" in result["note"]
    assert snapshot(setup.control_url) == before and snapshot(setup.old_url) == old_before


def test_reconcile_against_a_store_that_does_not_exist_creates_none(prefect_harness: None, setup: Setup) -> None:
    from shiftover.flows.reconcile import reconcile

    missing = setup.control_file.parent / "elsewhere.db"
    result = reconcile(spec_path=setup.spec_path, control_url=f"sqlite:///{missing}")
    assert result["note"].startswith("not started: nothing to reconcile") and NAME in result["note"]
    assert not missing.exists()


def test_throttle_refuses_an_unknown_migration(setup: Setup) -> None:
    from shiftover.cli import app

    before = snapshot(setup.control_url)
    result = CliRunner().invoke(app, ["throttle", NAME, "--pause", "--control-url", setup.control_url])
    assert result.exit_code == 2, result.output
    assert f"no migration '{NAME}' in the control store" in result.output and "shiftover throttle" in result.output
    assert snapshot(setup.control_url) == before
    known = CliRunner().invoke(app, ["throttle", "other", "--pause", "--control-url", setup.control_url])
    assert known.exit_code == 0, known.output


def test_the_error_hides_the_control_stores_password(pg_database: Callable[[], str], setup: Setup) -> None:
    """PostgreSQL here trusts local connections, so a password in the URL is accepted and ignored."""
    from shiftover.migration import load_migration

    url = sa.make_url(pg_database()).set(password="s3cret-pw").render_as_string(hide_password=False)
    open_store(url).register("other", {"name": "other"})
    with pytest.raises(UnknownMigrationError) as caught:
        load_migration(setup.spec_path, url, register=False, needed_by="a test")
    assert "s3cret-pw" not in str(caught.value) and "postgres:***@" in str(caught.value)
    assert [m["name"] for m in open_store(url).migrations()] == ["other"]
