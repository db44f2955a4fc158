"""The cross-engine type matrix: decimals, timestamps with and without time zone, booleans,
JSON, UUID, binary and NULLs survive MariaDB → PostgreSQL, SQLite → PostgreSQL,
PostgreSQL → MariaDB, PostgreSQL → SQLite and PostgreSQL → PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from shiftover.backfill import run_backfill

from .conftest import rows_of, run_sql

DDL = {
    "postgresql": (
        "CREATE TABLE items (id bigint PRIMARY KEY, amount numeric(12,2), plain_ts timestamp, "
        "zoned_ts timestamptz, flag boolean, doc jsonb, ref uuid, bin bytea, note text)"
    ),
    "mysql": (
        "CREATE TABLE items (id bigint PRIMARY KEY, amount decimal(12,2), plain_ts datetime(6), "
        "zoned_ts timestamp(6) NULL, flag boolean, doc json, ref uuid, bin longblob, note text)"
    ),
    "sqlite": (
        "CREATE TABLE items (id integer PRIMARY KEY, amount numeric(12,2), plain_ts datetime, "
        "zoned_ts timestamp, flag boolean, doc json, ref char(36), bin blob, note text)"
    ),
}

REF = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
ROWS = [
    {
        "id": 1,
        "amount": Decimal("1234567890.12"),
        "plain_ts": datetime(2024, 2, 29, 23, 59, 58, 123456),
        "zoned_ts": datetime(2024, 7, 1, 12, 0, 0, 654321, tzinfo=UTC),
        "flag": True,
        "doc": {"a": [1, 2, {"b": "é"}]},
        "ref": REF,
        "bin": b"\x00\xff\x10binary",
        "note": "it's",
    },
    {
        "id": 2,
        "amount": Decimal("-0.01"),
        "plain_ts": datetime(1999, 12, 31, 0, 0, 0),
        "zoned_ts": datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC),
        "flag": False,
        "doc": [],
        "ref": uuid.UUID(int=0),
        "bin": b"",
        "note": "tab\tnew\nline \\ back",
    },
    {
        "id": 3,
        "amount": None,
        "plain_ts": None,
        "zoned_ts": None,
        "flag": None,
        "doc": None,
        "ref": None,
        "bin": None,
        "note": None,
    },
]


def _insert(url: str, engine: str) -> None:
    values = []
    for r in ROWS:
        values.append(_literal_row(r, engine))
    run_sql(url, f"INSERT INTO items VALUES {', '.join(values)}")


def _literal_row(r: dict[str, Any], engine: str) -> str:
    def lit(name: str, v: Any) -> str:
        if v is None:
            return "NULL"
        if name == "flag":
            return ("TRUE" if v else "FALSE") if engine == "postgresql" else str(int(v))
        if name in ("plain_ts", "zoned_ts"):
            text = v.astimezone(UTC).replace(tzinfo=None).isoformat(" ") if v.tzinfo else v.isoformat(" ")
            return f"'{text}{'+00' if engine == 'postgresql' and name == 'zoned_ts' else ''}'"
        if name == "doc":
            return "'" + json.dumps(v, ensure_ascii=False) + "'"
        if name == "bin":
            if engine == "postgresql":
                return f"'\\x{v.hex()}'::bytea"
            return f"X'{v.hex()}'"
        if name in ("ref", "note"):
            escaped = str(v).replace("'", "''")
            return (
                f"E'{escaped}'".replace("\\", "\\\\")
                if engine == "postgresql" and "\\" in str(v)
                else (f"'{escaped}'" if engine != "mysql" else "'" + escaped.replace("\\", "\\\\") + "'")
            )
        return str(v)

    return "(" + ", ".join(lit(k, v) for k, v in r.items()) + ")"


def normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Compare values, not driver representations: what the diff engine does more thoroughly."""
    id_, amount, plain, zoned, flag, doc, ref, blob, note = row
    if isinstance(plain, str):
        plain = datetime.fromisoformat(plain)
    if isinstance(zoned, str):
        zoned = datetime.fromisoformat(zoned)
    if isinstance(zoned, datetime) and zoned.tzinfo is not None:
        zoned = zoned.astimezone(UTC).replace(tzinfo=None)
    if isinstance(doc, str):
        doc = json.loads(doc)
    return (
        int(id_),
        None if amount is None else Decimal(str(amount)).quantize(Decimal("0.01")),
        plain,
        zoned,
        None if flag is None else bool(flag),
        doc,
        None if ref is None else uuid.UUID(str(ref)),
        None if blob is None else bytes(blob),
        note,
    )


def _expected() -> list[tuple[Any, ...]]:
    return [normalise(tuple(r.values())) for r in ROWS]


PAIRS = [
    ("mysql", "postgresql"),
    ("sqlite", "postgresql"),
    ("postgresql", "mysql"),
    ("postgresql", "sqlite"),
    ("postgresql", "postgresql"),
    ("mysql", "sqlite"),
]


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
def test_type_matrix(source_engine, target_engine, pg_database, mariadb_database, sqlite_database, make_migration):  # type: ignore[no-untyped-def]
    make = {"postgresql": pg_database, "mysql": mariadb_database, "sqlite": sqlite_database}
    source, target = make[source_engine](), make[target_engine]()
    run_sql(source, DDL[source_engine])
    run_sql(target, DDL[target_engine])
    _insert(source, source_engine)
    query = "SELECT id, amount, plain_ts, zoned_ts, flag, doc, ref, bin, note FROM items ORDER BY id"
    assert [normalise(r) for r in rows_of(source, query)] == _expected()  # the fixture itself is right

    run_backfill(make_migration(source, target, chunk_rows=2))

    assert [normalise(r) for r in rows_of(target, query)] == _expected()
