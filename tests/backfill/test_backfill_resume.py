"""Crash-safe resume: a backfill killed with SIGKILL mid-copy continues from its checkpoints,
ends with identical tables, and re-reads at most one chunk per segment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from shiftover.backfill import backfill_status, run_backfill

from .conftest import ITEMS_DDL, control_url, fill_items, rows_of, run_sql

N, CHUNK = 12_000, 400

CHILD = textwrap.dedent("""
    import sys
    from shiftover.backfill import run_backfill
    from shiftover.migration import open_migration
    from shiftover.spec import parse_spec
    import json
    spec = parse_spec(json.loads(sys.argv[1]))
    run_backfill(open_migration(spec, sys.argv[2]))
""")


@pytest.mark.parametrize("target_engine", ["postgresql", "mysql"])
def test_sigkill_then_resume(target_engine, pg_database, mariadb_database, make_migration, control_store):  # type: ignore[no-untyped-def]
    source = pg_database()
    target = pg_database() if target_engine == "postgresql" else mariadb_database()
    fill_items(source, N)
    run_sql(target, ITEMS_DDL)
    migration = make_migration(source, target, chunk_rows=CHUNK, concurrency=2, max_rows_per_second=6000)
    spec_json = migration.spec.model_dump_json(by_alias=True)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, spec_json, control_url(control_store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_progress(control_store, migration.name, minimum=3 * CHUNK, child=child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    copied_before = rows_of(target, "SELECT count(*) FROM items")[0][0]
    assert 0 < copied_before < N, "the kill should land mid-copy"

    resumed = run_backfill(make_migration(source, target, chunk_rows=CHUNK, concurrency=2))

    query = "SELECT id, n, v FROM items ORDER BY id"
    assert rows_of(target, query) == rows_of(source, query)
    status = backfill_status(control_store.engine, migration.name)
    assert status.complete and status.rows_copied == N
    re_read = resumed.rows_copied - (N - copied_before)
    assert 0 <= re_read <= status.segments * CHUNK


def _wait_for_progress(store, name: str, minimum: int, child: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"child ended early: {child.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        with contextlib.suppress(Exception):  # the child may be creating the plan right now
            if backfill_status(store.engine, name).rows_copied >= minimum:
                return
        time.sleep(0.05)
    raise AssertionError("no progress within 60 s")
