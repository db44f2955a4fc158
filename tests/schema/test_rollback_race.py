"""A rollback arriving while a run is inside a stage's DDL, on each engine.

The rollback fences the run off at once, but the run had passed its fence check already. Without a
lock between the two, the rollback dropped the new columns and triggers it found, then the run's
DDL went on: new columns left on a table recorded ``rolled_back``, or (PostgreSQL) a sync trigger
over columns already dropped, failing every write of the application. Here the stage's DDL is
held back until the rollback's fence is up and the rollback had two seconds to finish; it must
instead wait for that DDL, then leave the table exactly as it was, and the application's writes
must go through. The rollback's spec spells the table another way (host, schema, a symlink): the
lock is the server's name for the table, not the spec's text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, respelt, spec_file

import shiftover.flows.expand as expand_flow
from shiftover.control.store import ControlStore
from shiftover.errors import LeaseLostError
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import rollback_schema_change, run_schema_change
from shiftover.phases import Phase
from shiftover.plan import read_state
from shiftover.schema.snapshot import snapshot_table

# the stage, the function of shiftover.flows.expand running its DDL, and where the run stops before it
STAGES = {"expand": ("expand", None), "sync": ("install_sync", "expand")}


def wait_for(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("stage", ["expand", "sync"])
@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_a_rollback_racing_a_stages_ddl_waits_for_it_and_leaves_the_table_as_it_was(
    kind: str,
    stage: str,
    database_url: Callable[[str], str],
    control_store: ControlStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = database_url(kind)
    engine = create_orders(url, rows=200)
    spec = make_spec(url)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    before = snapshot_table(engine, "orders", ("id",))
    function, first = STAGES[stage]
    if first:
        run_schema_change(path, control, RunOptions(auto_approve=True), stop_after=first)
    real = getattr(expand_flow, function)
    rollbacks: list[dict[str, Any]] = []
    threads: list[threading.Thread] = []
    # the operator's rollback names the table another way: it must still wait for the run's DDL
    operator_spec = make_spec(url, database=respelt(url, tmp_path))

    def racing(*args: Any, **kwargs: Any) -> Any:
        # past the run's fence check: the rollback comes now, and may finish if nothing holds it
        thread = threading.Thread(
            target=lambda: rollbacks.append(rollback_schema_change(operator_spec, control_store, "test", "race"))
        )
        threads.append(thread)
        thread.start()
        wait_for(lambda: bool(control_store.audit_entries(spec.name, action="rollback_started")))
        thread.join(timeout=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(expand_flow, function, racing)
    with pytest.raises(LeaseLostError):
        run_schema_change(path, control, RunOptions(auto_approve=True), stop_after=stage)
    threads[0].join(timeout=60)
    assert not threads[0].is_alive()
    assert [r["phase"] for r in rollbacks] == [Phase.ROLLED_BACK]
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    assert snapshot_table(engine, "orders", ("id",)) == before
    with engine.begin() as conn:  # the application's writes, as before the change
        conn.execute(sa.text("INSERT INTO orders (id, amount, note) VALUES (9001, 12.34, 'after')"))
        conn.execute(sa.text("UPDATE orders SET amount = 5.5 WHERE id = 3"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, amount FROM orders WHERE id IN (3, 9001) ORDER BY id")).all()
    assert [(i, float(a)) for i, a in rows] == [(3, 5.5), (9001, 12.34)]


def test_a_column_backfill_fenced_off_by_a_rollback_writes_no_further_batch(
    sqlite_database: Callable[[], str], control_store: ControlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shiftover.schema.backfill as column_backfill

    url = sqlite_database()
    engine = create_orders(url, rows=1_000)  # 4 batches of 250
    spec = make_spec(url)
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    before = snapshot_table(engine, "orders", ("id",))
    run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="sync")
    real, batches = column_backfill.update_batch, []

    def then_rollback(*args: Any) -> tuple[Any, int]:
        batches.append(args[3:])
        updated = real(*args)
        if len(batches) == 2:
            rollback_schema_change(spec, control_store, "test", "during the backfill")
        return updated

    monkeypatch.setattr(column_backfill, "update_batch", then_rollback)
    with pytest.raises(LeaseLostError):
        run_schema_change(path, control, RunOptions(auto_approve=True))
    assert len(batches) == 2  # the third batch never ran: it would have written the dropped columns
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    assert snapshot_table(engine, "orders", ("id",)) == before


def test_two_rollbacks_at_once_both_end_rolled_back(
    database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    url = database_url("postgres")
    engine = create_orders(url, rows=200)
    spec = make_spec(url)
    before = snapshot_table(engine, "orders", ("id",))
    run_schema_change(str(spec_file(tmp_path, spec)), str(control_store.engine.url), RunOptions(), stop_after="sync")
    results: list[Any] = []
    start = threading.Barrier(2)

    def operator(who: str) -> None:
        start.wait()
        try:
            results.append(rollback_schema_change(spec, control_store, who, "twice"))
        except Exception as error:  # reported by the assertion below
            results.append(error)

    operators = [threading.Thread(target=operator, args=(who,)) for who in ("alice", "bob")]
    for t in operators:
        t.start()
    for t in operators:
        t.join(timeout=60)
    assert all(isinstance(r, dict) for r in results), results
    assert sorted(r.get("note", "") for r in results) == ["", "already rolled back"], results
    assert read_state(control_store, spec.name).phase is Phase.ROLLED_BACK
    assert len(control_store.audit_entries(spec.name, action="rollback")) == 1
    assert snapshot_table(engine, "orders", ("id",)) == before
