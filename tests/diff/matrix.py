"""The type matrix shared by the engine-pair tests: a table with every hard case, equal rows,
and a set of deliberate changes with the exact differences they must produce."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from shiftover.mapping import ColumnMap, TableMapping

ROWS = 120
CEST = timezone(timedelta(hours=2))


def matrix_table(name: str = "matrix") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("qty", sa.Integer),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("ratio", sa.Double),
        sa.Column("label", sa.String(40)),
        sa.Column("code", sa.CHAR(6)),
        sa.Column("active", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at_time", sa.Time().with_variant(mysql.TIME(fsp=6), "mysql", "mariadb")),
        sa.Column("seen_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")),
        sa.Column("paid_at", sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")),
        sa.Column("attrs", sa.JSON),
        sa.Column("ref", sa.Uuid),
        sa.Column("blob", sa.LargeBinary),
    )


def matrix_row(i: int, *, tz_aware: bool) -> dict[str, Any]:
    paid = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=CEST) + timedelta(minutes=i)
    return {
        "id": i,
        "qty": i * 3 - 50,
        "price": Decimal(i * 137 % 100000) / 100,
        "ratio": i / 7,
        "label": None if i % 10 == 0 else ("" if i % 10 == 1 else f"naïve café {i}"),
        "code": f"C{i % 97}",
        "active": None if i % 13 == 0 else i % 2 == 0,
        "day": date(2024, 1, 1) + timedelta(days=i),
        "at_time": time(i % 24, i % 60, i % 60, 654321),
        "seen_at": datetime(2024, 5, 6, 7, 8, 9, 100000 + i),
        "paid_at": paid if tz_aware else paid.astimezone(UTC).replace(tzinfo=None),
        "attrs": {"n": i, "tags": ["a", "b"], "nested": {"x": 1.5, "y": None}},
        "ref": uuid.UUID(int=i * 7919),
        "blob": bytes([i % 256, 0, 255]),
    }


def fill(engine: sa.Engine, rows: int = ROWS, name: str = "matrix") -> sa.Table:
    table = matrix_table(name)
    table.create(engine)
    aware = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(table.insert(), [matrix_row(i, tz_aware=aware) for i in range(1, rows + 1)])
    return table


def mapping(name: str = "matrix") -> TableMapping:
    cols = tuple(ColumnMap(c.name, c.name) for c in matrix_table(name).columns)
    return TableMapping(name, name, ("id",), cols)


def apply_changes(engine: sa.Engine, name: str = "matrix") -> None:
    """Edit the target: some real differences, some that must NOT count as differences."""
    t = matrix_table(name)
    aware = engine.dialect.name == "postgresql"
    with engine.begin() as conn:

        def upd(i: int, **values: Any) -> None:
            conn.execute(t.update().where(t.c.id == i).values(**values))

        upd(3, price=Decimal("99999.99"))
        upd(4, label="naïve café 4 ")  # a trailing space in a VARCHAR is data
        upd(5, label="")  # a text value became ''
        upd(10, label="")  # NULL in the source, '' here
        upd(6, seen_at=datetime(2024, 5, 6, 7, 8, 9, 100007))  # one microsecond
        conn.execute(t.delete().where(t.c.id == 7))
        conn.execute(t.insert().values(matrix_row(1000, tz_aware=aware)))
        upd(11, active=True)  # source: False (11 is odd)
        upd(12, ref=uuid.UUID(int=1))
        upd(14, blob=b"\x00")
        upd(9, label=unicodedata.normalize("NFD", "naïve café 9"))  # text is byte-exact: NFD is not NFC
        # not differences:
        upd(8, ratio=8 / 7 + 1e-12)  # inside float_tolerance
        upd(15, code="C15   ")  # CHAR pads


EXPECTED = {
    (3,): ("changed", ("price",)),
    (4,): ("changed", ("label",)),
    (5,): ("changed", ("label",)),
    (6,): ("changed", ("seen_at",)),
    (7,): ("missing", ()),
    (9,): ("changed", ("label",)),
    (10,): ("changed", ("label",)),
    (11,): ("changed", ("active",)),
    (12,): ("changed", ("ref",)),
    (14,): ("changed", ("blob",)),
    (1000,): ("extra", ()),
}
