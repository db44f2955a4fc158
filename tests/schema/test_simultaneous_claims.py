"""Two schema changes on one table started at the same instant: exactly one runs, the other is
refused naming it, with no DDL and no claim of its own, whichever thread gets there first.

Each round has a fresh table and control store. Even rounds release both threads at the start of
``run_schema_change`` (the whole run's path to its claim races: registering, the lease, the spec
checks); odd rounds hold both at ``claim_table`` itself and release them together there, the
narrowest window the table's DDL lock has to close."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import create_orders, make_spec, respelt, spec_file

import shiftover.flows.expand as expand_flow
from shiftover.control.store import open_store
from shiftover.flows.context import RunOptions
from shiftover.flows.expand import run_schema_change
from shiftover.schema.claim import CLAIM
from shiftover.schema.errors import ConcurrentChangeError

ROUNDS = 6
ORIGINAL = {"id", "amount", "note"}
# what each change's expand adds, spelt out here (not read from the specs): the first moves amount
# to amount_cents and adds channel, the second adds source (its drop of note waits for contract)
SECOND = [{"op": "add_column", "column": "source", "type": "varchar(10)"}, {"op": "drop_column", "column": "note"}]
ADDS = {"first": {"amount_cents", "channel"}, "second": {"source"}}


def columns(url: str) -> set[str]:
    """The table's columns as a fresh connection sees them (no cached reflection)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("orders")}
    finally:
        engine.dispose()


def start_together(paths: dict[str, str], control: str) -> dict[str, Any]:
    """Each spec's run (to the end of expand) from its own thread, both released by one barrier:
    what each returned or raised."""
    at_start = threading.Barrier(len(paths), timeout=60)
    outcomes: dict[str, Any] = {}

    def run(which: str) -> None:
        try:
            at_start.wait()
            options = RunOptions(auto_approve=True)
            outcomes[which] = run_schema_change(paths[which], control, options, stop_after="expand")
        except BaseException as error:
            outcomes[which] = error

    threads = [threading.Thread(target=run, args=(k,)) for k in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a run never returned"
    return outcomes


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_two_changes_started_at_once_one_runs_the_other_is_refused_untouched(
    kind: str, database_url: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = expand_flow.claim_table
    at_claim: list[threading.Barrier] = []

    def claim_together(*args: Any, **kwargs: Any) -> None:
        if at_claim:
            at_claim[0].wait()
        real_claim(*args, **kwargs)

    monkeypatch.setattr(expand_flow, "claim_table", claim_together)
    for round_ in range(ROUNDS):
        here = tmp_path / f"round{round_}"
        here.mkdir()
        url = database_url(kind)
        create_orders(url, rows=50)
        names = {"first": f"orders-first-{round_}", "second": f"orders-second-{round_}"}
        specs = {
            "first": make_spec(url, name=names["first"]),
            "second": make_spec(url, name=names["second"], database=respelt(url, here), operations=SECOND),
        }
        paths = {k: str(spec_file(here, s, k)) for k, s in specs.items()}
        control = f"sqlite:///{here}/control.db"
        open_store(control)  # created beforehand, as by earlier runs (two first runs race on creating it)
        at_claim[:] = [] if round_ % 2 == 0 else [threading.Barrier(2, timeout=60)]
        outcomes = start_together(paths, control)
        refused = {k: v for k, v in outcomes.items() if isinstance(v, ConcurrentChangeError)}
        ran = {k: v for k, v in outcomes.items() if isinstance(v, dict)}
        assert len(refused) == 1 and len(ran) == 1, f"round {round_}: {outcomes!r}"
        (loser, error), (winner, report) = next(iter(refused.items())), next(iter(ran.items()))
        assert report["ran"] == ["expand"]
        assert [name for name, _ in error.holding] == [names[winner]]
        assert repr(names[winner]) in str(error)
        # the loser ran no DDL: the table is the original plus the winner's columns only
        assert columns(url) == ORIGINAL | ADDS[winner]
        store = open_store(control)
        assert store.audit_entries(names[loser], action=CLAIM) == []
        assert len(store.audit_entries(names[winner], action=CLAIM)) == 1
        assert not store.has_migration(names[loser])  # a refused first run leaves no migration
