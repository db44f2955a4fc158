"""split_column, then merge_columns, in place under the example application's live HTTP load, on each
engine: three versions of the orders application (``examples/app/amounts_service.py``) serve in
turn, two at a time, as rolling deployments run them.

1. ``split_column`` of ``amount`` into ``amount_units`` and ``amount_subunits``: v1 (``amount``)
   serves from the start, v2 (``amount_parts``) from after validate; v1 stops after writes switch,
   and contract drops ``amount``.
2. ``merge_columns`` of the two parts into ``amount_cents``: v2 keeps serving, v3
   (``amount_cents``) starts after validate; v2 stops after writes switch, and contract drops the
   parts.

Each version's load thread owns its keys (v3 takes over v1's) and remembers every write the
application acknowledged. With both running versions paused after each write switch, every key
reads back through both as last written through either, and every row's new columns equal up(old)
computed in Python from a plain SELECT. No request may fail, and at the end every acknowledged
write is in ``amount_cents``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from http_versions import VersionLoad, cross_read, read_table

from shiftover.connect import get_engine
from shiftover.demo.orders import create_orders
from shiftover.examples.app.amounts_service import AmountsService

ROWS = 2_000
PARTS = ("amount_units", "amount_subunits")

# Each engine's SQL for the whole units of a positive amount, and for integer division by 100.
UNITS = {"postgres": "floor(amount)", "mariadb": "floor(amount)", "sqlite": "CAST(amount AS INTEGER)"}
DIV = {"postgres": "amount_cents / 100", "mariadb": "amount_cents DIV 100", "sqlite": "amount_cents / 100"}


def split_operation(kind: str) -> dict[str, Any]:
    units = UNITS[kind]
    return {
        "op": "split_column",
        "column": "amount",
        "into": [
            {"name": "amount_units", "type": "bigint", "up": units},
            {"name": "amount_subunits", "type": "integer", "up": f"CAST(round((amount - {units}) * 100) AS INTEGER)"},
        ],
        # round(, 2): on SQLite the sum is a double, and 12 + 34 / 100.0 need not be the double of 12.34
        "down": "round(amount_units + amount_subunits / 100.0, 2)",
        "reversible": True,
    }


def merge_operation(kind: str) -> dict[str, Any]:
    return {
        "op": "merge_columns",
        "columns": list(PARTS),
        "to": "amount_cents",
        "type": "bigint",
        "up": "amount_units * 100 + amount_subunits",
        "down": {"amount_units": DIV[kind], "amount_subunits": "amount_cents % 100"},
        "reversible": True,
    }


def write_spec(path: Path, url: str, name: str, operation: dict[str, Any]) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "expand_contract",
                "name": name,
                "database": {"url": url, "table": "orders"},
                "key": ["id"],
                "operations": [operation],
                "lock": {"timeout_ms": 500, "attempts": 100, "backoff_ms": 20, "max_backoff_ms": 200},
                "backfill": {"chunk_rows": 400},
                "approvals": {"auto": True},
                "retention_hours": 0,
            }
        )
    )
    return str(path)


def cents_in_python(amount: Any) -> int:
    """An amount read back by plain SQL, in cents (exactly: no float arithmetic)."""
    cents = Decimal(str(amount)) * 100
    assert cents == cents.to_integral_value(), amount
    return int(cents)


def wrong_split_rows(url: str) -> list[tuple[int, tuple[Any, ...]]]:
    """Rows whose parts are not up(amount), computed in Python."""
    wrong = []
    for key, (amount, units, subunits) in read_table(url, ("amount", *PARTS)).items():
        cents = cents_in_python(amount)
        if (units, subunits) != (cents // 100, cents % 100) or type(units) is not int:
            wrong.append((key, (amount, units, subunits)))
    return wrong


def wrong_merge_rows(url: str) -> list[tuple[int, tuple[Any, ...]]]:
    """Rows whose ``amount_cents`` is not up(parts), computed in Python."""
    rows = read_table(url, (*PARTS, "amount_cents"))
    return [(key, row) for key, row in rows.items() if row[2] != row[0] * 100 + row[1] or type(row[2]) is not int]


def columns_of(url: str) -> set[str]:
    return {c["name"] for c in sa.inspect(get_engine(url)).get_columns("orders")}


def switch_under_load(spec: str, control: str, old: VersionLoad, new: VersionLoad) -> None:
    """Run ``spec`` to validate under ``old``, start ``new``, run to the write switch, then pause both
    and read every acknowledged key back through both. ``old`` is closed (retired before contract)."""
    from shiftover.flows.expand import expand_contract

    old.busy()
    first = expand_contract(spec, control, auto_approve=True, stop_after="validate")
    assert first["ran"][:4] == ["expand", "sync", "backfill", "validate"], first
    new.start().busy()
    second = expand_contract(spec, control, auto_approve=True, stop_after="switch_writes")
    assert second["ran"][-1] == "switch_writes", second
    old.busy()
    new.busy()
    old.pause()
    new.pause()
    assert cross_read([old, new], {**old.expected, **new.expected}) == []
    old.close()


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_split_then_merge_under_application_versions_over_http(
    kind: str, database_url: Callable[[str], str], prefect_harness: None, tmp_path: Path
) -> None:
    from shiftover.flows.expand import expand_contract

    url = database_url(kind)
    engine = get_engine(url)
    create_orders(engine, rows=ROWS)
    control = f"sqlite:///{tmp_path / 'control.db'}"
    split_spec = write_spec(tmp_path / "split.yaml", url, f"orders-split-{kind}", split_operation(kind))
    merge_spec = write_spec(tmp_path / "merge.yaml", url, f"orders-merge-{kind}", merge_operation(kind))
    odd, even = list(range(1, ROWS + 1, 2)), list(range(2, ROWS + 1, 2))
    # v2 inserts too where a BEFORE trigger fills the NOT NULL amount (SQLite's triggers run AFTER it)
    v2_inserts = [] if kind == "sqlite" else list(range(ROWS + 2, ROWS + 200, 2))
    v1 = VersionLoad(AmountsService(engine, "amount"), odd, list(range(ROWS + 1, ROWS + 200, 2)), 1, ROWS)
    v2 = VersionLoad(AmountsService(engine, "amount_parts"), even, v2_inserts, 2, ROWS)
    loads = [v1, v2]
    try:
        switch_under_load(split_spec, control, v1.start(), v2)
        assert wrong_split_rows(url) == []
        v2.start().busy()
        split_done = expand_contract(split_spec, control, auto_approve=True)
        assert split_done["phase"] == "decommissioned", split_done
        assert "amount" not in columns_of(url) and set(PARTS) <= columns_of(url)

        # v3 takes over v1's keys (its inserts among them) and inserts keys no version wrote before;
        # the parts are nullable, so it inserts on SQLite too
        v3 = VersionLoad(
            AmountsService(engine, "amount_cents"), list(v1.owned), list(range(ROWS + 201, ROWS + 400, 2)), 3, ROWS
        )
        loads.append(v3)
        switch_under_load(merge_spec, control, v2, v3)
        assert wrong_merge_rows(url) == []
        v3.start().busy()
        merge_done = expand_contract(merge_spec, control, auto_approve=True)
        assert merge_done["phase"] == "decommissioned", merge_done
    finally:
        for load in loads:
            load.close()

    for load in loads:
        assert load.failures == [], (load.service.version, load.failures[:5])
        assert load.mismatches == [], (load.service.version, load.mismatches[:5])
        assert load.requests >= 80 and len(load.expected) > 20, (load.service.version, load.requests)
    expected = {**v1.expected, **v2.expected, **v3.expected}  # in the order the versions wrote
    table = read_table(url, ("amount_cents",))
    assert {k: v[0] for k, v in table.items() if k in expected} == expected
    assert len(table) == ROWS + sum(1 for k in expected if k > ROWS)
    assert columns_of(url) & {"amount", *PARTS} == set() and "amount_cents" in columns_of(url)
    print(f"{kind}: " + ", ".join(f"{load.service.version} {load.requests} requests" for load in loads) + ", 0 failed")
