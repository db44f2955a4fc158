"""An application's reads during an expand/contract change (``ColumnReads``), on the real servers:
the reads flag's percentage picks old or new columns per key, by a bucketing the test computes
itself; a row put out of step on purpose (triggers dropped) is a shadow mismatch naming its key and
both values, and the read is served all the same."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import ENGINES, create_orders, make_spec

from shiftover.flags.client import FlagClient
from shiftover.flags.store import set_flag
from shiftover.metrics import Recorder
from shiftover.schema.backfill import backfill_columns
from shiftover.schema.columns import Target, expand, install_sync, remove_sync
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
