"""Shadow reads on real servers use the diff's equality: correct data across a type change (TEXT of
JSON to JSONB, PostgreSQL to MariaDB) records no mismatch, and a wrong value is one mismatch that
the diff names too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.control.store import ControlStore, utcnow
from shiftover.diff import diff_tables
from shiftover.dualwrite import DualWriter
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import set_reads_percent, set_shadow
from shiftover.metrics import mismatch_rate
from shiftover.preflight import resolve_mapping
from shiftover.spec import parse_spec

OLD_DDL = (
    "CREATE TABLE docs (id integer PRIMARY KEY, doc text, ratio double precision, amount numeric(12, 2), "
    "at timestamptz, note text, name text)"
)
NEW_DDL = {
    "postgresql": (
        "CREATE TABLE docs (id integer PRIMARY KEY, doc jsonb, ratio double precision, amount numeric(12, 2), "
        "at timestamptz, note text, name text)"
    ),
    "mysql": (
        "CREATE TABLE docs (id integer PRIMARY KEY, doc JSON, ratio DOUBLE, amount DECIMAL(12, 2), "
        "at DATETIME(6), note TEXT, name TEXT) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ),
}
# The target's own spelling of a correct copy of ``doc`` (a JSON value, not a JSON string).
NEW_INSERT = {
    "postgresql": "INSERT INTO docs VALUES (:id, CAST(:doc AS jsonb), :ratio, :amount, :at, :note, :name)",
    "mysql": "INSERT INTO docs VALUES (:id, :doc, :ratio, :amount, :at, :note, :name)",
}
ZONE = timezone(timedelta(hours=5, minutes=30))
ROWS: list[dict[str, Any]] = [
    {"doc": '{"b": [1, 2.5], "a": null}', "ratio": -0.0, "note": "", "name": "cafe\u0301"},
    {"doc": "null", "ratio": 5e-324, "note": None, "name": "café"},  # JSON null, the smallest subnormal
    {"doc": None, "ratio": 0.1 + 0.2, "note": "x", "name": ""},  # SQL NULL, 17 significant digits
    {"doc": '"text"', "ratio": 1.7976931348623157e308, "note": " ", "name": None},
    {"doc": "[]", "ratio": None, "note": None, "name": "Å"},
]


def fill(old: sa.Engine, new: sa.Engine) -> list[dict[str, Any]]:
    """The old table and a correct copy in the new one (as a backfill would write it)."""
    rows = [
        {"id": i, "amount": Decimal("1.50") * i, "at": datetime(2024, 3, 1, 9, i, 7, 123456, tzinfo=ZONE), **r}
        for i, r in enumerate(ROWS, start=1)
    ]
    if new.dialect.name != "postgresql":
        rows[0]["ratio"] = 0.0  # MariaDB stores -0.0 as 0: no exact copy exists (a float_tolerance accepts it)
    with old.begin() as conn:
        conn.execute(sa.text(OLD_DDL))
        conn.execute(sa.text("INSERT INTO docs VALUES (:id, :doc, :ratio, :amount, :at, :note, :name)"), rows)
    dialect = "postgresql" if new.dialect.name == "postgresql" else "mysql"
    with new.begin() as conn:
        conn.execute(sa.text(NEW_DDL[dialect]))
        naive_utc = [{**r, "at": r["at"].astimezone(UTC).replace(tzinfo=None)} for r in rows]
        conn.execute(sa.text(NEW_INSERT[dialect]), rows if dialect == "postgresql" else naive_utc)
    return rows


def shadow_read_all(writer: DualWriter, store: ControlStore, name: str, ids: range) -> tuple[int, int]:
    since = utcnow()
    for i in ids:
        writer.read((i,))
    writer.flush()
    return mismatch_rate(store.engine, name, since)


@pytest.mark.parametrize("new_kind", ["postgres", "mariadb"])
def test_shadow_reads_of_correct_data_record_no_mismatch(
    new_kind: str,
    pg_database: Callable[[], str],
    database_url: Callable[[str], str],
    control_store: ControlStore,
) -> None:
    old_url, new_url = pg_database(), database_url(new_kind)
    old, new = get_engine(old_url), get_engine(new_url)
    fill(old, new)
    name = f"docs_{new_kind}"
    spec = parse_spec(
        {
            "name": name,
            "source": {"url": old_url, "table": "docs"},
            "target": {"url": new_url, "table": "docs"},
            "key": ["id"],
        }
    )
    control_store.register(name, {})
    set_shadow(control_store.engine, name, True, "test")
    flags = FlagClient(control_store.engine, prefix=f"{name}:", start=False)
    ids = range(1, len(ROWS) + 2)  # and one key absent from both
    with DualWriter.from_spec(spec, control_store.url, flags=flags) as writer:
        assert shadow_read_all(writer, control_store, name, ids) == (len(ids), 0)  # old primary
        assert writer.read((1,))["doc"] == ROWS[0]["doc"]  # type: ignore[index]  # the old answer, untouched
        writer.flush()
        set_reads_percent(control_store.engine, name, 100, "test")
        flags.refresh()
        assert shadow_read_all(writer, control_store, name, ids) == (len(ids), 0)  # new primary, old shadowed
        # the diff agrees, floats compared exactly on either pair
        assert diff_tables(old, new, resolve_mapping(spec), spec.validation).differences == []

        with new.begin() as conn:  # a JSON string where the JSON value belongs: wrong
            conn.execute(sa.text("UPDATE docs SET doc = :d WHERE id = 5"), {"d": '"[]"'})
        assert shadow_read_all(writer, control_store, name, ids) == (len(ids), 1)
        differences = diff_tables(old, new, resolve_mapping(spec), spec.validation).differences
        assert [(d.key, d.columns) for d in differences] == [((5,), ("doc",))]
