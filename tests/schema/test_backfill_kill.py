"""kill -9 during the column backfill, then a re-run: it resumes after the last saved batch and
the column ends exactly equal to up(old) (PostgreSQL and MariaDB)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from conftest import create_orders, make_spec

from shiftover.backfill.checkpoints import SegmentState, load_plan
from shiftover.control.store import ControlStore
from shiftover.schema.backfill import backfill_columns, checkpoint_name
from shiftover.schema.columns import Target, expand, install_sync
from shiftover.schema.spec import ExpandContractSpec
from shiftover.schema.validate import validate_columns

CHILD = """
import json
from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target
from shiftover.schema.spec import parse_expand_contract
spec = parse_expand_contract(json.loads({spec!r}))
backfill_columns(Target.of(get_engine(spec.database.url), spec), spec, open_store({control!r}).engine)
"""


def kill_backfill_midway(spec: ExpandContractSpec, store: ControlStore, after_rows: int = 500) -> SegmentState:
    """Run ``spec``'s column backfill in a child process and SIGKILL it once its checkpoint has
    saved ``after_rows`` rows; returns the checkpoint it left (expand and sync have run already)."""
    code = CHILD.format(spec=json.dumps(spec.model_dump(mode="json", by_alias=True)), control=str(store.engine.url))
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            saved = load_plan(store.engine, checkpoint_name(spec))
            if saved and saved[0].rows_copied >= after_rows:
                break
            assert child.poll() is None, "the backfill ended before it was killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    return load_plan(store.engine, checkpoint_name(spec))[0]


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_kill_9_during_the_backfill_then_resume(
    kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=3_000)
    spec = make_spec(url, backfill={"chunk_rows": 50, "max_rows_per_second": 1000})
    target = Target.of(engine, spec)
    expand(target, spec)
    install_sync(target, spec)
    killed_at = kill_backfill_midway(spec, control_store)
    assert not killed_at.done and killed_at.last_key is not None
    assert not validate_columns(target, spec).passed  # rows past the checkpoint are still empty
    resumed = backfill_columns(target, spec, control_store.engine)
    assert resumed.complete and resumed.resumed_from == killed_at.last_key
    # A batch committed after the last saved checkpoint is found in step and not counted again.
    assert 3_000 - 1 - 50 <= killed_at.rows_copied + resumed.rows_updated <= 3_000 - 1  # (row 7 is NULL)
    assert validate_columns(target, spec).passed
