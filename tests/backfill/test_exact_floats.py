"""Floats travel bit for bit on the repair and drain path (issue 11 §2): ``sync_keys`` between
MariaDB DOUBLE and PostgreSQL double precision, both ways, read back through the raw drivers."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.mapping import ColumnMap, TableMapping, forget_reflections
from shiftover.rowsync import sync_keys

VALUES = [13.809359999999998, 2.5e-10, 5e-324, 0.1 + 0.2, 1.7976931348623157e308, 2.2250738585072014e-308, -1e-300]
DDL = {
    "postgres": "CREATE TABLE f (id bigint PRIMARY KEY, v double precision)",
    "mariadb": "CREATE TABLE f (id bigint PRIMARY KEY, v double)",
}


def bits(x: float) -> bytes:
    return struct.pack(">d", x)


def raw_values(url: str) -> list[bytes]:
    """The stored doubles as the driver hands them over, outside Shiftover's code."""
    conn = get_engine(url).raw_connection()
    try:
        cur = conn.cursor()
        cur.execute("SELECT v FROM f ORDER BY id")
        return [bits(float(v)) for (v,) in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize("direction", ["mariadb->postgres", "postgres->mariadb"])
def test_sync_keys_carries_doubles_bit_for_bit(direction: str, database_url: Callable[[str], str]) -> None:
    src_kind, dst_kind = direction.split("->")
    src, dst = database_url(src_kind), database_url(dst_kind)
    for url, kind in ((src, src_kind), (dst, dst_kind)):
        with get_engine(url).begin() as conn:
            conn.execute(sa.text(DDL[kind]))
    with get_engine(src).begin() as conn:
        conn.execute(sa.text("INSERT INTO f VALUES (:i, :v)"), [{"i": i, "v": v} for i, v in enumerate(VALUES)])
    forget_reflections()
    mapping = TableMapping("f", "f", ("id",), (ColumnMap("id", "id"), ColumnMap("v", "v")))
    sync_keys(get_engine(src), get_engine(dst), mapping, [(i,) for i in range(len(VALUES))])
    assert raw_values(src) == [bits(v) for v in VALUES]  # the source held them exactly
    assert raw_values(dst) == raw_values(src)
