"""sync_keys makes keys in the target equal to the source of truth, on every engine pair."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.demo import create_orders
from shiftover.preflight import resolve_mapping
from shiftover.rowsync import sync_keys
from shiftover.spec import parse_spec


@pytest.fixture(params=["sqlite->sqlite", "postgres->postgres", "mariadb->postgres", "postgres->mariadb"])
def pair(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> tuple[str, str]:
    src_kind, dst_kind = request.param.split("->")
    return database_url(src_kind), database_url(dst_kind)


def rows(url: str) -> dict[int, tuple[object, ...]]:
    with get_engine(url).connect() as conn:
        return {
            r[0]: (Decimal(str(r[1])).quantize(Decimal("0.01")), r[2], r[3])
            for r in conn.execute(sa.text("SELECT id, amount, status, note FROM orders ORDER BY id"))
        }


def test_upserts_present_rows_and_deletes_absent_ones(pair: tuple[str, str]) -> None:
    src, dst = pair
    create_orders(get_engine(src), rows=20)
    create_orders(get_engine(dst), rows=0)
    spec = parse_spec(
        {"name": "m", "source": {"url": src, "table": "orders"}, "target": {"url": dst, "table": "orders"}, "key": "id"}
    )
    mapping = resolve_mapping(spec)
    assert sync_keys(get_engine(src), get_engine(dst), mapping, [(1,), (2,), (3,)]).upserted == 3
    with get_engine(src).begin() as conn:
        conn.execute(sa.text("UPDATE orders SET amount = 12.34, note = NULL WHERE id = 2"))
        conn.execute(sa.text("DELETE FROM orders WHERE id = 3"))
    result = sync_keys(get_engine(src), get_engine(dst), mapping, [(2,), (3,), (99,)])
    assert (result.upserted, result.deleted) == (1, 2)
    assert rows(dst) == {k: v for k, v in rows(src).items() if k in (1, 2)}
    assert rows(dst)[2][0] == Decimal("12.34") and rows(dst)[2][2] is None


def blank_notes(frame):  # type: ignore[no-untyped-def]
    """A transform in pandas style: a missing value is NaN."""
    frame["note"] = float("nan")
    frame["status"] = frame["status"].str.upper()
    return frame


def test_transformed_rows_reach_the_target_with_null_not_nan(pair: tuple[str, str]) -> None:
    from dataclasses import replace

    src, dst = pair
    create_orders(get_engine(src), rows=4)
    create_orders(get_engine(dst), rows=0)
    spec = parse_spec(
        {"name": "m", "source": {"url": src, "table": "orders"}, "target": {"url": dst, "table": "orders"}, "key": "id"}
    )
    mapping = replace(resolve_mapping(spec), transform=blank_notes)
    sync_keys(get_engine(src), get_engine(dst), mapping, [(1,), (2,)])
    with get_engine(dst).connect() as conn:
        got = conn.execute(sa.text("SELECT id, status, note FROM orders ORDER BY id")).all()
    assert [(r[0], r[1].isupper(), r[2]) for r in got] == [(1, True, None), (2, True, None)]
