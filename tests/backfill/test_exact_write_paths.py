"""Issue 11 §2: every write path carries values bit for bit. One table of hostile values (subnormal,
0.1+0.2, 17 significant digits, the largest double, -0.0 and NaN/inf where the engines keep them,
NFC and NFD text, trailing spaces, astral characters, JSON null beside SQL NULL and a JSON string
'null') goes through the backfill, the repair/drain path (``sync_keys``), the dual-writer and the
trigger capture's replay. After each, both stores are read with plain SQL through the raw drivers
and compared here: floats by their 64 bits, text by its UTF-8 bytes, JSON parsed (numbers exact)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from shiftover.backfill import run_backfill
from shiftover.capture import install_capture, remove_capture, replay_changelog
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.dualwrite import DualWriter
from shiftover.flags.client import FlagClient
from shiftover.flags.routing import WriteMode, set_write_mode
from shiftover.mapping import forget_reflections
from shiftover.rowsync import sync_keys

from .conftest import run_sql

DDL = {
    "postgresql": "CREATE TABLE vals (id bigint PRIMARY KEY, f double precision, t text, j jsonb)",
    "mysql": "CREATE TABLE vals (id bigint PRIMARY KEY, f double, t text, j json) DEFAULT CHARSET=utf8mb4",
    "sqlite": "CREATE TABLE vals (id integer PRIMARY KEY, f double precision, t text, j json)",
}
AS_TEXT = {"postgresql": "j::text", "mysql": "j", "sqlite": "CAST(j AS TEXT)"}
FLOATS = [5e-324, 0.1 + 0.2, 1.2345678901234567, 1.7976931348623157e308, -2.2250738585072014e-308, 1e16, 3.0]
TEXTS = ["cafe\u0301", "caf\u00e9", "", "a  ", "\U0001f600 x", "tab\there", None]
JSONS = ["null", None, '"null"', '{"a": null, "b": [1, 2.5, "é"]}', "-12.5e3", "[]", '"text"']


def values(source: str, target: str) -> list[dict[str, Any]]:
    floats = list(FLOATS)
    if "mysql" not in (source, target):
        floats.append(-0.0)  # MariaDB keeps no negative zero
    if {source, target} == {"postgresql"}:
        floats += [math.inf, -math.inf, math.nan]  # only PostgreSQL stores them
    n = max(len(floats), len(TEXTS), len(JSONS))
    return [
        {"id": i + 1, "f": floats[i % len(floats)], "t": TEXTS[i % len(TEXTS)], "j": JSONS[i % len(JSONS)]}
        for i in range(n * 2)
    ]


def insert_raw(url: str, engine_kind: str, rows: list[dict[str, Any]]) -> None:
    """Rows written through the raw driver (JSON as text), outside Shiftover's code."""
    raw = get_engine(url).raw_connection()
    try:
        mark = "?" if engine_kind == "sqlite" else "%s"
        cur = raw.cursor()
        cur.executemany(
            f"INSERT INTO vals VALUES ({mark}, {mark}, {mark}, {mark})",
            [(r["id"], r["f"], r["t"], r["j"]) for r in rows],
        )
        raw.commit()
    finally:
        raw.close()


def stored(url: str, engine_kind: str) -> dict[int, tuple[Any, ...]]:
    """Each row as comparable facts: the float's bits, the text's bytes, the parsed JSON (or SQL NULL)."""
    raw = get_engine(url).raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"SELECT id, f, t, {AS_TEXT[engine_kind]} FROM vals ORDER BY id")
        out = {}
        for i, f, t, j in cur.fetchall():
            bits = None if f is None else struct.pack("<d", float(f))
            text = None if t is None else t.encode()
            doc = "SQL NULL" if j is None else json.loads(str(j), parse_float=Decimal, parse_int=Decimal)
            out[int(i)] = (bits, text, _normal(doc))
        return out
    finally:
        raw.close()


def _normal(doc: Any) -> Any:
    if isinstance(doc, Decimal):
        return doc.normalize()
    if isinstance(doc, dict):
        return {k: _normal(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_normal(v) for v in doc]
    return doc


PAIRS = [("postgresql", "mysql"), ("mysql", "postgresql"), ("postgresql", "postgresql"), ("sqlite", "postgresql")]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_every_write_path_carries_values_bit_for_bit(  # type: ignore[no-untyped-def]
    source_kind, target_kind, pg_database, mariadb_database, sqlite_database, make_migration, control_store
) -> None:
    make: dict[str, Callable[[], str]] = {
        "postgresql": pg_database,
        "mysql": mariadb_database,
        "sqlite": sqlite_database,
    }
    source, target = make[source_kind](), make[target_kind]()
    run_sql(source, DDL[source_kind])
    run_sql(target, DDL[target_kind])
    rows = values(source_kind, target_kind)
    half = len(rows) // 2
    insert_raw(source, source_kind, rows[:half])
    m = make_migration(source, target, table="vals", chunk_rows=3)
    expected = stored(source, source_kind)
    assert len(expected) == half

    # 1. the backfill
    run_backfill(m)
    assert stored(target, target_kind) == expected

    # 2. repair and the reconciliation drain: rows deleted or spoiled in the target, rewritten from the source
    run_sql(target, "DELETE FROM vals WHERE id <= 3", "UPDATE vals SET f = NULL, t = NULL, j = NULL WHERE id > 3")
    sync_keys(m.source, m.target, m.mapping, [(r["id"],) for r in rows[:half]])
    assert stored(target, target_kind) == expected

    # 3. the dual-writer: the application writes the second half through it (old, then new)
    store: ControlStore = control_store
    set_write_mode(store.engine, m.name, WriteMode.DUAL_OLD_PRIMARY, "test")
    flags = FlagClient(store.engine, prefix=f"{m.name}:", start=False)
    with DualWriter(m.source, m.target, m.mapping, flags, store.engine, m.name) as writer:
        for r in rows[half:]:
            writer.insert(r)
        writer.update((1,), {"f": rows[half]["f"], "t": rows[half]["t"], "j": rows[half]["j"]})
        writer.flush()
    expected = stored(source, source_kind)
    assert len(expected) == len(rows)
    assert stored(target, target_kind) == expected

    # 4. trigger capture: changes made in the old store behind Shiftover's back, replayed in order
    set_write_mode(store.engine, m.name, WriteMode.OLD_ONLY, "test")
    install_capture(m.source, m.mapping)
    try:
        raw = get_engine(source).raw_connection()
        try:
            cur, mark = raw.cursor(), "?" if source_kind == "sqlite" else "%s"
            for r, other in zip(rows, reversed(rows), strict=True):
                cur.execute(
                    f"UPDATE vals SET f = {mark}, t = {mark}, j = {mark} WHERE id = {mark}",
                    (other["f"], other["t"], other["j"], r["id"]),
                )
            cur.execute(f"DELETE FROM vals WHERE id = {mark}", (2,))
            raw.commit()
        finally:
            raw.close()
        replay_changelog(m.source, m.target, m.mapping)
    finally:
        remove_capture(m.source, m.mapping)
    forget_reflections()
    expected = stored(source, source_kind)
    assert 2 not in expected and stored(target, target_kind) == expected
