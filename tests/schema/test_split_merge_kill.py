"""kill -9 during a split_column's and a merge_columns' column backfill, then a re-run, on every
engine: the checkpoint left by the killed process matches what it committed, the re-run resumes
from it, and every row's new columns end equal to up(old), computed in Python from a plain SELECT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_backfill_kill import kill_backfill_midway
from test_schema_split_merge import ENGINES, ROWS, join, make_case, read, split

from shiftover.backfill.checkpoints import load_plan
from shiftover.control.store import ControlStore
from shiftover.schema.backfill import backfill_columns, checkpoint_name
from shiftover.schema.columns import Target, expand, install_sync
from shiftover.schema.spec import ColumnBackfillSpec

CHUNK = 50
PACED = ColumnBackfillSpec(chunk_rows=CHUNK, max_rows_per_second=500)  # about 2.4 s for 1,200 rows


def expected_and_actual(op: str, target: Target) -> dict[int, tuple[Any, Any]]:
    """Per row: up(old) computed in Python, and the new columns as stored (plain SQL)."""
    if op == "split":
        rows = read(target.engine, "full_name, first_name, last_name")
        return {i: (split(full), (first, last)) for i, (full, first, last) in rows.items()}
    rows = read(target.engine, "first_name, last_name, full_name")
    return {i: ((join(first, last),), (full,)) for i, (first, last, full) in rows.items()}


@pytest.mark.parametrize("op", ["split", "merge"])
@pytest.mark.parametrize("kind", ENGINES)
def test_kill_9_during_a_split_or_merge_backfill_then_resume(
    op: str, kind: str, database_url: Callable[[str], str], control_store: ControlStore
) -> None:
    case = make_case(op, kind, database_url(kind))
    spec = case.spec.model_copy(update={"backfill": PACED})
    expand(case.target, spec)
    install_sync(case.target, spec)
    no_old = [i for i, (want, _) in expected_and_actual(op, case.target).items() if want == (None,) * len(want)]
    assert no_old == [7]  # its new columns stay NULL: the backfill never writes it

    killed_at = kill_backfill_midway(spec, control_store, after_rows=300)
    assert not killed_at.done and killed_at.last_key is not None
    last = int(killed_at.last_key[0])
    rows = expected_and_actual(op, case.target)
    behind = [i for i, (want, got) in rows.items() if i <= last and want != got]
    assert behind == []  # everything up to the saved key was committed
    ahead = [i for i, (want, got) in rows.items() if i > last and want == got and i not in no_old]
    assert len(ahead) <= CHUNK  # at most the one batch committed after the last save
    assert len(ahead) < ROWS - last  # killed mid-way: rows remain to fill
    assert killed_at.rows_copied == last - len([i for i in no_old if i <= last])  # counted = rows it wrote

    resumed = backfill_columns(case.target, spec, control_store.engine)
    assert resumed.complete and resumed.resumed_from == killed_at.last_key
    rows = expected_and_actual(op, case.target)
    assert [i for i, (want, got) in rows.items() if want != got] == []
    assert len(rows) == ROWS
    final = load_plan(control_store.engine, checkpoint_name(spec))[0]
    assert final.done and final.rows_copied == killed_at.rows_copied + resumed.rows_updated
    # the batch committed after the last save is found in step on resume and not written again
    assert final.rows_copied == ROWS - len(no_old) - len(ahead)
