"""An application's reads during an expand/contract change (``ColumnReads``), on the real servers:
the reads flag's percentage picks old or new columns per key, by a bucketing the test computes
itself; a row put out of step on purpose (triggers dropped) is a shadow mismatch naming its key and
both values, and the read is served all the same."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ENGINES, create_orders, make_spec, spec_file

from shiftover import metrics
from shiftover.control.store import ControlStore
from shiftover.errors import SpecError
from shiftover.flags.client import FlagClient
from shiftover.flags.store import get_flag, set_flag
from shiftover.metrics import Recorder
from shiftover.plan import read_state
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target, expand, install_sync, remove_sync
from shiftover.schema.errors import CanaryStoppedError
from shiftover.schema.reads import ColumnReads
from shiftover.schema.spec import ExpandContractSpec

FLAG = "orders-cents:schema.reads"
KEYS = range(1, 1001)


def cents(amount: object) -> int | None:
    return None if amount is None else int((Decimal(str(amount)) * 100).to_integral_value())


def bucket_of(key: int) -> float:
    """The key's bucket, computed here from the documented rule (blake2b-64 of flag, 0x1f, key text)."""
    digest = hashlib.blake2b(f"{FLAG}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64


def plain_rows(engine: sa.Engine) -> dict[int, tuple[object, object]]:
    with engine.connect() as conn:
        return {
            r.id: (r.amount, r.amount_cents)
            for r in conn.execute(sa.text("SELECT id, amount, amount_cents FROM orders"))
        }


def as_json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture(params=ENGINES)
def synced(
    request: pytest.FixtureRequest, database_url: Callable[[str], str], control_store
) -> tuple[Target, ExpandContractSpec]:  # type: ignore[no-untyped-def]
    """The orders table during sync: both columns present, triggers on, backfill done."""
    url = database_url(request.param)
    spec = make_spec(url)
    target = Target.of(create_orders(url), spec)
    expand(target, spec)
    install_sync(target, spec)
    assert backfill_columns(target, spec, control_store.engine).complete
    return target, spec


def flip(client: FlagClient, store: sa.Engine, value: object) -> None:
    set_flag(store, FLAG, value, "test")
    assert client.refresh()


def test_reads_go_to_the_new_columns_by_bucket_as_the_percentage_rises(synced, control_store) -> None:  # type: ignore[no-untyped-def]
    target, spec = synced
    client = FlagClient(control_store.engine, start=False)
    reads = ColumnReads(client, spec, target.engine, columns=["note"])
    truth = plain_rows(target.engine)
    served_new: dict[float, set[int]] = {}
    for value, percent in [(None, 0.0), ({"columns": "new", "percent": 50}, 50.0), ({"columns": "new"}, 100.0)]:
        if value is not None:
            flip(client, control_store.engine, value)
        served_new[percent] = set()
        for key in KEYS:
            row = reads.read(key)
            assert row is not None
            amount, amount_cents = truth[key]
            if "amount_cents" in row:
                assert set(row) == {"id", "note", "amount_cents"}
                assert row["amount_cents"] == amount_cents
                served_new[percent].add(key)
            else:
                assert set(row) == {"id", "note", "amount"}
                assert row["amount"] == amount
        expected = {k for k in KEYS if bucket_of(k) < percent}
        assert served_new[percent] == expected
    assert served_new[0.0] == set()
    assert served_new[100.0] == set(KEYS)
    assert 450 <= len(served_new[50.0]) <= 550
    assert served_new[0.0] <= served_new[50.0] <= served_new[100.0]  # no key flips back
    assert reads.read(10_000_000) is None


def test_an_out_of_step_row_is_a_shadow_mismatch_and_still_served(synced, control_store) -> None:  # type: ignore[no-untyped-def]
    target, spec = synced
    with target.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 12.34 WHERE id = 42"))
    remove_sync(target, spec)  # triggers bypassed: the new column alone is written
    with target.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = 999999 WHERE id = 42"))
    install_sync(target, spec)
    amount, amount_cents = plain_rows(target.engine)[42]
    assert (cents(amount), amount_cents) == (1234, 999999)  # out of step, read back by plain SQL

    client = FlagClient(control_store.engine, start=False)
    recorder = Recorder(control_store.engine, spec.name)
    reads = ColumnReads(client, spec, target.engine, recorder)
    flip(client, control_store.engine, {"columns": "new", "percent": 50, "shadow": True})
    served = {key: reads.read(key) for key in range(1, 51)}  # id 7 (NULL on both sides) among them
    assert all(row is not None for row in served.values())
    if bucket_of(42) < 50:
        assert served[42] == {"id": 42, "amount_cents": 999999}  # the stored value, mismatch or not
    else:
        assert served[42] is not None and cents(served[42]["amount"]) == 1234
    assert recorder.flush()

    with control_store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT key_json, columns, old_value, new_value FROM so_shadow_mismatches WHERE migration = :m"),
            {"m": spec.name},
        ).all()
        counters = dict(
            conn.execute(
                sa.text("SELECT name, SUM(value) FROM so_metrics WHERE migration = :m GROUP BY name"), {"m": spec.name}
            ).all()
        )
    assert len(rows) == 1
    key_json, columns, old_value, new_value = (as_json(v) for v in rows[0])
    assert key_json == [42]
    assert columns == ["amount_cents"]
    assert int(Decimal(str(old_value["amount_cents"]))) == 1234  # up(old), computed by the database
    assert new_value == {"amount_cents": 999999}
    assert counters.get("shadow_reads") == 50
    assert counters.get("shadow_mismatches") == 1
    assert not counters.get("shadow_errors")


def test_a_shadow_comparison_that_fails_is_counted_and_the_read_served(synced, control_store) -> None:  # type: ignore[no-untyped-def]
    target, spec = synced
    broken = make_spec(
        str(spec.database.url),
        operations=[
            {
                "op": "change_column",
                "column": "amount",
                "to": "amount_cents",
                "type": "bigint",
                "up": "round(amount * 100) + no_such_column",
                "down": "amount_cents / 100.0",
            }
        ],
    )
    client = FlagClient(control_store.engine, start=False)
    recorder = Recorder(control_store.engine, spec.name)
    reads = ColumnReads(client, broken, target.engine, recorder)
    flip(client, control_store.engine, {"columns": "new", "shadow": True})
    assert reads.read(5) == {"id": 5, "amount_cents": cents(plain_rows(target.engine)[5][0])}
    assert recorder.flush()
    with control_store.engine.connect() as conn:
        errors = conn.execute(
            sa.text("SELECT SUM(value) FROM so_metrics WHERE migration = :m AND name = 'shadow_errors'"),
            {"m": spec.name},
        ).scalar()
    assert errors == 1


class Application:
    """An application reading a few keys through ``ColumnReads`` on its own thread, flag client
    refreshed and recorder flushed every 0.1 s, as a deployed one would."""

    def __init__(self, spec: ExpandContractSpec, engine: sa.Engine, store: sa.Engine, keys: range) -> None:
        self.client = FlagClient(store, ttl=0.1)
        self.recorder = Recorder(store, spec.name)
        self.reads = ColumnReads(self.client, spec, engine, self.recorder)
        self.keys, self.served, self.stop = keys, 0, threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            for key in self.keys:
                assert self.reads.read(key) is not None
                self.served += 1
            self.recorder.flush()
            time.sleep(0.1)

    def __enter__(self) -> Application:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.recorder.flush()
        self.client.close()


def reads_flag_values(store: ControlStore, name: str) -> list[object]:
    return [
        e["detail"]["value"] for e in store.audit_entries(name) if e["action"] == "flag" and e["detail"]["flag"] == FLAG
    ]


@pytest.mark.parametrize("kind", ENGINES)
def test_a_shadow_mismatch_stops_the_reads_canary_at_its_step(  # type: ignore[no-untyped-def]
    kind: str, prefect_harness: None, database_url: Callable[[str], str], control_store: ControlStore, tmp_path: Path
) -> None:
    from shiftover.flows.expand import expand_contract

    url = database_url(kind)
    engine = create_orders(url, rows=200)
    spec = make_spec(url, reads={"canary_percent": [50, 100], "soak_seconds": 2.0})
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    expand_contract(path, control, auto_approve=True, stop_after="validate")
    target = Target.of(engine, spec)
    remove_sync(target, spec)  # key 42 out of step after validation, as a bug in a writer would leave it
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 42"))
    install_sync(target, spec)

    with Application(spec, engine, control_store.engine, range(40, 45)) as app:
        with pytest.raises(CanaryStoppedError) as stopped:
            expand_contract(path, control, auto_approve=True, stop_after="switch_reads")
    assert app.served > 0
    assert "50 % canary step" in str(stopped.value) and "key [42]" in str(stopped.value)
    assert get_flag(control_store.engine, FLAG).value == {"columns": "old"}  # type: ignore[union-attr]
    assert reads_flag_values(control_store, spec.name) == [
        {"columns": "new", "percent": 50, "shadow": True},
        {"columns": "old"},
    ]
    assert "switch_reads" not in read_state(control_store, spec.name).completed

    with engine.begin() as conn:  # the row repaired: the canary runs through
        conn.execute(sa.text("UPDATE orders SET amount_cents = amount_cents - 1 WHERE id = 42"))
    with Application(spec, engine, control_store.engine, range(40, 45)):
        report = expand_contract(path, control, auto_approve=True, stop_after="switch_reads")
    steps = report["stages"]["switch_reads"]["canary"]
    assert [s["percent"] for s in steps] == [50, 100] and all(s["shadow_reads"] > 0 for s in steps)
    assert get_flag(control_store.engine, FLAG).value == {"columns": "new"}  # type: ignore[union-attr]
    assert reads_flag_values(control_store, spec.name)[2:] == [
        {"columns": "new", "percent": 50, "shadow": True},
        {"columns": "new", "percent": 100, "shadow": True},
        {"columns": "new"},
    ]


def test_without_a_reads_field_switch_reads_flips_once(
    control_store: ControlStore, database_url, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.context import RunOptions
    from shiftover.flows.expand import run_schema_change

    url = database_url("sqlite")
    create_orders(url, rows=50)
    spec = make_spec(url)
    run_schema_change(
        str(spec_file(tmp_path, spec)), str(control_store.engine.url), RunOptions(), stop_after="switch_reads"
    )
    assert reads_flag_values(control_store, spec.name) == [{"columns": "new"}]


def test_canary_steps_are_checked_by_field() -> None:
    with pytest.raises(SpecError, match=r"reads\.canary_percent.*rise strictly"):
        make_spec("sqlite:///unused.db", reads={"canary_percent": [50, 5, 100]})
    with pytest.raises(SpecError, match=r"reads\.canary_percent.*end at 100"):
        make_spec("sqlite:///unused.db", reads={"canary_percent": [5, 50]})


def test_a_canary_step_with_no_shadow_reads_is_not_passed_on_no_evidence(
    control_store: ControlStore, database_url, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from shiftover.flows.context import RunOptions
    from shiftover.flows.expand import run_schema_change
    from shiftover.schema.errors import CanaryUnjudgedError

    url = database_url("sqlite")
    create_orders(url, rows=50)
    spec = make_spec(url, reads={"canary_percent": [10, 100], "soak_seconds": 0.2})
    path, control = str(spec_file(tmp_path, spec)), str(control_store.engine.url)
    with pytest.raises(CanaryUnjudgedError, match=r"10 % canary step: 0 shadow read\(s\)"):
        run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="switch_reads")  # nobody reads
    assert get_flag(control_store.engine, FLAG).value == {"columns": "old"}  # type: ignore[union-attr]
    assert "switch_reads" not in read_state(control_store, spec.name).completed

    allowed = make_spec(url, reads={"canary_percent": [10, 100], "soak_seconds": 0.2, "min_shadow_reads": 0})
    path = str(spec_file(tmp_path, allowed, "allowed"))
    report = run_schema_change(path, control, RunOptions(auto_approve=True), stop_after="switch_reads")
    assert [s["shadow_reads"] for s in report["stages"]["switch_reads"]["canary"]] == [0, 0]
    assert get_flag(control_store.engine, FLAG).value == {"columns": "new"}  # type: ignore[union-attr]


def test_shadow_errors_stop_the_reads_canary_as_mismatches_do(control_store: ControlStore) -> None:
    """A step whose shadow comparisons could not run (``up`` raising on the application's rows, say)
    saw no mismatch, but it is not passed: the errors are reads nobody judged."""
    from shiftover.schema.canary import canary_reads

    spec = make_spec("sqlite:///unused.db", reads={"canary_percent": [50, 100], "soak_seconds": 0})
    recorder = Recorder(control_store.engine, spec.name)

    def soak(_seconds: float) -> None:  # the application's traffic during the step, flushed as it would be
        for _ in range(20):
            recorder.count(metrics.SHADOW_READS)
        recorder.count(metrics.SHADOW_ERRORS, 3)
        recorder.flush()

    with pytest.raises(CanaryStoppedError, match=r"0 shadow mismatch\(es\) in 20 shadow read\(s\) and 3 shadow error"):
        canary_reads(control_store.engine, spec, "test", sleep=soak)
    assert reads_flag_values(control_store, spec.name) == [
        {"columns": "new", "percent": 50, "shadow": True},
        {"columns": "old"},
    ]
