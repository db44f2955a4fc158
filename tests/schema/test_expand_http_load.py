"""A schema change in place under the example application's live HTTP load, on each engine.

Two versions of the orders application (``examples/app/amounts_service.py``) serve HTTP, as in a
rolling deployment: v1 reads and writes ``amount``; v2, started once expand added the column, reads
and writes ``amount_cents`` only. The ``expand-contract`` flow changes ``amount`` into
``amount_cents`` and, in the same spec, builds an index, drops ``note`` and (where the engine can
do it online) adds a CHECK and a NOT NULL, while both versions keep serving. v1 is stopped after
writes switch, before contract. Each version's load thread owns its keys and remembers the value
of every write the application acknowledged; the checks read the table with plain SQL and compute
up(old) in Python (``expected_cents``), so none of them asks Shiftover:

- no request fails (v2's inserts included, filled in the old column by the BEFORE triggers);
- with both versions paused, every key reads back through *both* versions as last written through
  either (the triggers keep the other column in step);
- before contract every row holds ``amount_cents == round(amount * 100)``; after it every
  acknowledged write is in ``amount_cents``, and ``amount`` and ``note`` are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from http_versions import VersionLoad, cross_read, read_table

from shiftover.connect import get_engine
from shiftover.demo.expand import expected_cents
from shiftover.demo.orders import create_orders
from shiftover.examples.app.amounts_service import AmountsService

ROWS = 3_000


def engine_operations(kind: str) -> list[dict[str, Any]]:
    """Every operation the engine can do online, on one table (see the README's expand/contract table)."""
    operations: list[dict[str, Any]] = [
        {
            "op": "change_column",
            "column": "amount",
            "to": "amount_cents",
            "type": "bigint",
            "up": "round(amount * 100)",
            "down": "amount_cents / 100.0",
            "reversible": True,
        },
        {"op": "create_index", "name": "ix_orders_amount_cents", "columns": ["amount_cents"]},
        {"op": "drop_column", "column": "note"},
    ]
    if kind == "postgres":
        operations.append({"op": "add_check", "name": "ck_orders_cents", "expression": "amount_cents >= 0"})
    if kind != "sqlite":  # SQLite needs a table rebuild for NOT NULL (refused)
        operations.append({"op": "set_not_null", "column": "amount_cents"})
    return operations


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_every_online_operation_under_two_application_versions_over_http(
    kind: str, database_url: Callable[[str], str], prefect_harness: None, tmp_path: Path
) -> None:
    from shiftover.flows.expand import expand_contract

    url = database_url(kind)
    engine = get_engine(url)
    create_orders(engine, rows=ROWS)
    spec_path, control = tmp_path / "spec.yaml", f"sqlite:///{tmp_path / 'control.db'}"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "kind": "expand_contract",
                "name": f"orders-cents-http-{kind}",
                "database": {"url": url, "table": "orders"},
                "key": ["id"],
                "operations": engine_operations(kind),
                # MariaDB's INPLACE NOT NULL ends under an exclusive metadata lock: room to retry
                "lock": {"timeout_ms": 500, "attempts": 100, "backoff_ms": 20, "max_backoff_ms": 200},
                "backfill": {"chunk_rows": 500},
                "approvals": {"auto": True},
                "retention_hours": 0,
            }
        )
    )
    odd, even = list(range(1, ROWS + 1, 2)), list(range(2, ROWS + 1, 2))
    v1 = VersionLoad(AmountsService(engine, "amount"), odd, list(range(ROWS + 1, ROWS + 200, 2)), 1, ROWS).start()
    # v2 inserts too where a BEFORE trigger fills the NOT NULL amount; SQLite's triggers run AFTER it
    v2_inserts = [] if kind == "sqlite" else list(range(ROWS + 2, ROWS + 200, 2))
    v2: VersionLoad | None = None
    try:
        v1.busy()
        first = expand_contract(str(spec_path), control, auto_approve=True, stop_after="validate")
        assert first["ran"][:4] == ["expand", "sync", "backfill", "validate"], first
        v2 = VersionLoad(AmountsService(engine, "amount_cents"), even, v2_inserts, 2, ROWS).start()
        v2.busy()
        second = expand_contract(str(spec_path), control, auto_approve=True, stop_after="switch_writes")
        assert second["ran"][-1] == "switch_writes", second
        v1.busy()
        v2.busy()

        v1.pause()
        v2.pause()
        expected = {**v1.expected, **v2.expected}
        assert v1.requests >= 80 and v2.requests >= 80, (v1.requests, v2.requests, v1.failures, v2.failures)
        assert len(v2.expected) > 20 and len(v1.expected) > 20
        assert cross_read([v1, v2], expected) == []
        table = read_table(url)
        wrong = [(k, a, c) for k, (a, c) in table.items() if c != expected_cents(a) or type(c) is not int]
        assert wrong == [], wrong[:5]
        v1.close()  # the old version is retired before contract
        v2.start().busy()

        third = expand_contract(str(spec_path), control, auto_approve=True)
        assert third["phase"] == "decommissioned", third
    finally:
        v1.close()
        if v2 is not None:
            v2.close()

    assert v1.failures == [] and v2.failures == [], (v1.failures[:5], v2.failures[:5])
    assert v1.mismatches == [] and v2.mismatches == [], (v1.mismatches[:5], v2.mismatches[:5])
    expected = {**v1.expected, **v2.expected}
    table = read_table(url)
    assert {k: v[0] for k, v in table.items() if k in expected} == expected  # only amount_cents is left
    assert len(table) == ROWS + sum(1 for k in expected if k > ROWS)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("orders")}
    assert "amount" not in columns and "note" not in columns and "amount_cents" in columns
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("orders")}
    assert "ix_orders_amount_cents" in indexes
    if kind != "sqlite":
        assert not next(c["nullable"] for c in sa.inspect(engine).get_columns("orders") if c["name"] == "amount_cents")
    print(
        f"{kind}: v1 {v1.requests} requests ({len(v1.expected)} keys), v2 {v2.requests} requests "
        f"({len(v2.expected)} keys), 0 failed; ran {first['ran'] + second['ran'] + third['ran']}"
    )
