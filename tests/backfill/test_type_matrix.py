"""Issue 11, item 6: the type matrix on the real servers. For each engine pair and common type,
either the rehearsal refuses before anything is written, naming the column and a fix, or the real
backfill (creating the target where the case says so) copies every value exactly: the diff finds
no difference, and the values read back through the raw drivers (psycopg, PyMySQL, sqlite3, not
Shiftover's code) equal the source's and the case's expected values. docs/TYPES.md publishes this.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from shiftover.backfill import run_backfill, target_ddl
from shiftover.connect import get_engine
from shiftover.diff import diff_tables
from shiftover.mapping import forget_reflections
from shiftover.rehearsal import rehearse

from .conftest import run_sql

PG, MY, LITE = "postgresql", "mysql", "sqlite"


@dataclass(frozen=True)
class Case:
    id: str
    src: str
    dst: str
    src_ddl: str  # table t (or ``table``) with key id and the column under test, v
    rows: str  # INSERT statement(s) for the source, ';'-separated
    expected: Sequence[Any] | None = None  # v per row in id order, as ``norm`` reads it raw on both sides
    dst_ddl: str | None = None  # None: the backfill creates the target (backfill.create_target)
    refused: str | None = None  # the rehearsal must refuse, its finding holding this text
    norm: Callable[[Any], Any] = lambda v: v
    cast: dict[str, str] = field(default_factory=dict)  # engine -> raw SQL around v ("{}::text")
    table: str = "t"
    column: str = "v"
    src_setup: str = ""  # statements run first on the source (types, sql_mode)
    created_type: str | None = None  # the created target column's type, as the target engine names it


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def _uuid(v: Any) -> Any:
    return None if v is None else uuid.UUID(v.hex() if isinstance(v, bytes) and len(v) == 16 else str(v))


def _bits(v: Any) -> Any:
    if v is None or isinstance(v, int):
        return v
    return int.from_bytes(v, "big") if isinstance(v, bytes) else int(str(v), 2)


def _bytes(v: Any) -> Any:
    return None if v is None else bytes(v)


def _instant(v: Any) -> Any:
    """An instant in UTC (a naive value is taken as UTC, as the raw sessions here run in UTC)."""
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    if isinstance(v, datetime) and v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v


def _dec(v: Any) -> Any:
    d = None if v is None else Decimal(str(v))
    return "NaN" if d is not None and d.is_nan() else d  # NaN != NaN


DOC_VALUES = [
    {"a": [1, 2, {"b": "é"}], "n": 1.5},
    [],
    "text",
    [12345678901234567890, 1e-7],
    None,
    {"k": 'quote " and back \\'},
]


def _docs(engine: str) -> str:
    """The JSON documents as SQL literals (MariaDB reads a backslash in a literal as an escape)."""
    texts = ["NULL" if v is None else "'" + json.dumps(v, ensure_ascii=False) + "'" for v in DOC_VALUES]
    if engine == MY:
        texts = [t.replace("\\", "\\\\") for t in texts]
    return "INSERT INTO t VALUES " + ", ".join(f"({i}, {t})" for i, t in enumerate(texts, 1))


JSON_DDL = {
    PG: "CREATE TABLE t (id bigint PRIMARY KEY, v jsonb)",
    MY: "CREATE TABLE t (id bigint PRIMARY KEY, v json)",
    LITE: "CREATE TABLE t (id integer PRIMARY KEY, v json)",
}
ENGINES = (PG, MY, LITE)
# what a created target holds JSON in: PostgreSQL's json keeps the document's text (jsonb would turn -0.0
# into 0.0), MariaDB's JSON is LONGTEXT with a json_valid CHECK
MY_JSON = "longtext CHECK json_valid(`v`)"
JSON_CREATED = {(PG, PG): "jsonb", (MY, PG): "json", (LITE, PG): "json", (PG, MY): MY_JSON, (MY, MY): MY_JSON}
CROSS = [(a, b) for a in ENGINES for b in ENGINES if not (a == b == LITE)]

NUMERIC_ROWS = (
    "INSERT INTO t VALUES (1, 1234567890123456789012345678.0123456789), (2, -0.0000000001), (3, 0), (4, NULL)"
)
NUMERIC_VALUES = [
    Decimal("1234567890123456789012345678.0123456789"),
    Decimal("-0.0000000001"),
    Decimal("0E-10"),
    None,
]
BLOB_ROWS = {
    PG: "INSERT INTO t VALUES (1, '\\x00ff10626c6f62'::bytea), (2, ''::bytea), (3, NULL)",
    MY: "INSERT INTO t VALUES (1, X'00ff10626c6f62'), (2, X''), (3, NULL)",
    LITE: "INSERT INTO t VALUES (1, X'00ff10626c6f62'), (2, X''), (3, NULL)",
}
BLOB_DDL = {
    PG: "CREATE TABLE t (id bigint PRIMARY KEY, v bytea)",
    MY: "CREATE TABLE t (id bigint PRIMARY KEY, v longblob)",
    LITE: "CREATE TABLE t (id integer PRIMARY KEY, v blob)",
}
UUIDS = [uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427"), uuid.UUID(int=0), None]
UUID_DDL = {
    PG: "CREATE TABLE t (id bigint PRIMARY KEY, v uuid)",
    MY: "CREATE TABLE t (id bigint PRIMARY KEY, v uuid)",
    LITE: "CREATE TABLE t (id integer PRIMARY KEY, v char(36))",
}
UUID_ROWS = (
    "INSERT INTO t VALUES (1, '1b4e28ba-2fa1-11d2-883f-0016d3cca427'), "
    "(2, '00000000-0000-0000-0000-000000000000'), (3, NULL)"
)
TS_DDL = {
    PG: "CREATE TABLE t (id bigint PRIMARY KEY, v timestamp(6))",
    MY: "CREATE TABLE t (id bigint PRIMARY KEY, v datetime(6))",
    LITE: "CREATE TABLE t (id integer PRIMARY KEY, v datetime)",
}
TS_ROWS = "INSERT INTO t VALUES (1, '2024-02-29 23:59:58.123456'), (2, '1999-12-31 00:00:00'), (3, NULL)"
TS_VALUES = [datetime(2024, 2, 29, 23, 59, 58, 123456), datetime(1999, 12, 31), None]
TSTZ_DDL = {
    PG: "CREATE TABLE t (id bigint PRIMARY KEY, v timestamptz(6))",
    MY: "CREATE TABLE t (id bigint PRIMARY KEY, v timestamp(6) NULL)",
}
TSTZ_ROWS = "INSERT INTO t VALUES (1, '2024-07-01 12:00:00.654321'), (2, '2000-01-01 00:00:00'), (3, NULL)"
TSTZ_VALUES = [datetime(2024, 7, 1, 12, 0, 0, 654321), datetime(2000, 1, 1), None]
SHORT = {PG: "pg", MY: "mysql", LITE: "sqlite"}


def _tstz(src: str, dst: str, created_type: str | None = None) -> Case:
    """A timestamp with a zone into a created target: the same instants (PostgreSQL's rows say +00)."""
    rows = TSTZ_ROWS.replace("')", "+00')") if src == PG else TSTZ_ROWS
    name = f"timestamptz-{SHORT[src]}-{SHORT[dst]}-created"
    return Case(name, src, dst, TSTZ_DDL[src], rows, TSTZ_VALUES, norm=_instant, created_type=created_type)


CASES: list[Case] = []
for _s, _d in CROSS:
    for _create in (False, True):
        CASES.append(
            Case(
                f"json-{_s}-{_d}{'-created' if _create else ''}",
                _s,
                _d,
                JSON_DDL[_s],
                _docs(_s),
                DOC_VALUES,
                None if _create else JSON_DDL[_d],
                norm=_json,
                cast={PG: "{}::text"},
                created_type=JSON_CREATED.get((_s, _d)) if _create else None,
            )
        )
    CASES.append(
        Case(
            f"bytes-{_s}-{_d}",
            _s,
            _d,
            BLOB_DDL[_s],
            BLOB_ROWS[_s],
            [b"\x00\xff\x10blob", b"", None],
            BLOB_DDL[_d],
            norm=_bytes,
        )
    )
    CASES.append(
        Case(
            f"bytes-{_s}-{_d}-created",
            _s,
            _d,
            BLOB_DDL[_s],
            BLOB_ROWS[_s],
            [b"\x00\xff\x10blob", b"", None],
            norm=_bytes,
        )
    )
    CASES.append(Case(f"uuid-{_s}-{_d}-created", _s, _d, UUID_DDL[_s], UUID_ROWS, UUIDS, norm=_uuid))
    CASES.append(Case(f"uuid-{_s}-{_d}", _s, _d, UUID_DDL[_s], UUID_ROWS, UUIDS, UUID_DDL[_d], norm=_uuid))
    CASES.append(Case(f"timestamp-{_s}-{_d}-created", _s, _d, TS_DDL[_s], TS_ROWS, TS_VALUES, norm=_instant))

CASES += [
    # PostgreSQL json (text kept as written) next to jsonb
    Case(
        "json-text-pg-pg-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v json)",
        _docs(PG),
        DOC_VALUES,
        norm=_json,
        cast={PG: "{}::text"},
    ),
    Case(
        "json-text-pg-mysql",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v json)",
        _docs(PG),
        DOC_VALUES,
        JSON_DDL[MY],
        norm=_json,
        cast={PG: "{}::text"},
    ),
    # jsonb keeps a number as numeric, which has no -0.0 (main's JSON compare calls -0.0 and 0.0 the same
    # number); a created target is json, which keeps the document's text
    Case(
        "json-negative-zero-mysql-pg-created",
        MY,
        PG,
        JSON_DDL[MY],
        "INSERT INTO t VALUES (1, '[-0.0]')",
        ["[-0.0]"],
        norm=lambda v: None if v is None else json.dumps(_json(v)),
        cast={PG: "{}::text"},
    ),
    # arrays (PostgreSQL to PostgreSQL)
    Case(
        "array-pg-pg",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text[], w int[])",
        "INSERT INTO t VALUES (1, ARRAY['a', NULL, 'q\"uote', ''], ARRAY[1, NULL, 3]), (2, '{}', '{}'), "
        "(3, NULL, NULL)",
        [["a", None, 'q"uote', ""], [], None],
        "CREATE TABLE t (id bigint PRIMARY KEY, v text[], w int[])",
    ),
    Case(
        "array-pg-pg-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text[], w int[])",
        "INSERT INTO t VALUES (1, ARRAY['a', NULL, 'q\"uote', ''], ARRAY[1, NULL, 3]), (2, '{}', '{}'), "
        "(3, NULL, NULL)",
        [["a", None, 'q"uote', ""], [], None],
    ),
    Case(
        "array-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text[])",
        "INSERT INTO t VALUES (1, ARRAY['a', 'b'])",
        refused="column 'v': its source type TEXT[] has no mysql type to create it as",
    ),
    # interval
    Case(
        "interval-pg-pg-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v interval)",
        "INSERT INTO t VALUES (1, '1 year 2 mons 3 days 04:05:06.789'), (2, '-1 day'), (3, NULL)",
        ["1 year 2 mons 3 days 04:05:06.789", "-1 days", None],
        cast={PG: "{}::text"},
    ),
    Case(
        "interval-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v interval)",
        "INSERT INTO t VALUES (1, '1 year 2 mons')",
        refused="column 'v': its source type INTERVAL has no mysql type to create it as",
    ),
    # bit
    Case(
        "bit-pg-pg-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, B'10100001'), (2, B'00000000'), (3, NULL)",
        [0b10100001, 0, None],
        norm=_bits,
    ),
    Case(
        "bit-mysql-mysql",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, b'10100001'), (2, b'0'), (3, NULL)",
        [0b10100001, 0, None],
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        norm=_bits,
    ),
    Case(
        "bit-mysql-mysql-created",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, b'10100001'), (2, b'0'), (3, NULL)",
        [0b10100001, 0, None],
        norm=_bits,
    ),
    Case(
        "bit-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, b'10100001'), (2, b'0'), (3, NULL)",
        refused="column 'v' is an array, interval or bit",
    ),
    Case(
        "bit-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, B'10100001'), (2, B'00000000'), (3, NULL)",
        refused="column 'v' is an array, interval or bit",
    ),
    Case(
        "bit-pg-mysql",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, B'10100001')",
        dst_ddl="CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        refused="column 'v' is an array, interval or bit",
    ),
    Case(
        "bit-width-pg-pg",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v bit(8))",
        "INSERT INTO t VALUES (1, B'10100001')",
        dst_ddl="CREATE TABLE t (id bigint PRIMARY KEY, v varbit(16))",
        refused="column 'v' is an array, interval or bit",
    ),
    # enum
    Case(
        "enum-pg-pg-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v mood)",
        "INSERT INTO t VALUES (1, 'sad'), (2, 'Happy Days'), (3, NULL)",
        ["sad", "Happy Days", None],
        src_setup="CREATE TYPE mood AS ENUM ('sad', 'Happy Days')",
        created_type="mood",
    ),
    Case(
        "enum-mysql-mysql",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v enum('', 'a', 'b c'))",
        "INSERT INTO t VALUES (1, 'a'), (2, ''), (3, 'b c'), (4, NULL)",
        ["a", "", "b c", None],
        "CREATE TABLE t (id bigint PRIMARY KEY, v enum('', 'a', 'b c'))",
    ),
    Case(
        "enum-mysql-mysql-created",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v enum('', 'a', 'b c'))",
        "INSERT INTO t VALUES (1, 'a'), (2, ''), (3, 'b c'), (4, NULL)",
        ["a", "", "b c", None],
        created_type="enum('','a','b c')",
    ),
    Case(
        "enum-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v enum('', 'a', 'b c'))",
        "INSERT INTO t VALUES (1, 'a'), (2, ''), (3, 'b c'), (4, NULL)",
        ["a", "", "b c", None],
        created_type="character varying(3)",
    ),
    Case(
        "enum-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v mood)",
        "INSERT INTO t VALUES (1, 'sad'), (2, 'Happy Days'), (3, NULL)",
        ["sad", "Happy Days", None],
        src_setup="CREATE TYPE mood AS ENUM ('sad', 'Happy Days')",
    ),
    # numeric(38,10), NaN
    Case(
        "numeric-pg-pg-nan-created",
        PG,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS + ", (5, 'NaN')",
        [*NUMERIC_VALUES, "NaN"],
        norm=_dec,
        cast={PG: "{}::text"},
    ),
    Case(
        "numeric-pg-mysql",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS,
        NUMERIC_VALUES,
        "CREATE TABLE t (id bigint PRIMARY KEY, v decimal(38,10))",
        norm=_dec,
    ),
    Case(
        "numeric-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS,
        NUMERIC_VALUES,
        norm=_dec,
    ),
    Case(
        "numeric-nan-pg-mysql",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS + ", (5, 'NaN')",
        dst_ddl="CREATE TABLE t (id bigint PRIMARY KEY, v decimal(38,10))",
        refused="the target refused 1 of 5 rehearsed row(s), first key (5,)",
    ),
    Case(
        "numeric-nan-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS + ", (5, 'NaN')",
        refused="nan can not be used with MySQL; the target's type holds no NaN or infinity",
    ),
    # past 28 significant digits (Python's default decimal context): a rounding is still found
    Case(
        "numeric-narrower-pg-mysql",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS,
        dst_ddl="CREATE TABLE t (id bigint PRIMARY KEY, v decimal(38,8))",
        refused="column 'v' changes on the way",
    ),
    Case(
        "numeric-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v decimal(38,10))",
        NUMERIC_ROWS,
        NUMERIC_VALUES,
        norm=_dec,
    ),
    Case(
        "numeric-mysql-mysql-created",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v decimal(38,10))",
        NUMERIC_ROWS,
        NUMERIC_VALUES,
        norm=_dec,
    ),
    # unconstrained PostgreSQL numeric into a created MariaDB table: never decimal(10,0)
    Case(
        "numeric-unconstrained-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric)",
        "INSERT INTO t VALUES (1, -7.25), (2, 1.2345), (3, 123456789012.5), (4, NULL)",
        [Decimal("-7.25"), Decimal("1.2345"), Decimal("123456789012.5"), None],
        norm=_dec,
        created_type="decimal(65,30)",
    ),
    Case(
        "numeric-unconstrained-too-fine-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric)",
        "INSERT INTO t VALUES (1, -7.25), (2, 0.1234567890123456789012345678901234)",
        refused="column 'v' changes on the way",
    ),
    Case(
        "numeric-unconstrained-too-big-pg-mysql-created",
        PG,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric)",
        "INSERT INTO t VALUES (1, -7.25), (2, 1e40)",
        refused="column 'v'",
    ),
    # MariaDB zero dates
    Case(
        "zero-date-mysql-mysql",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, v datetime, d date)",
        "INSERT INTO t VALUES (1, '0000-00-00 00:00:00', '0000-00-00'), (2, '2024-01-02 03:04:05', '2024-01-02')",
        ["0000-00-00 00:00:00", "2024-01-02 03:04:05"],
        "CREATE TABLE t (id bigint PRIMARY KEY, v datetime, d date)",
        cast={MY: "CAST({} AS CHAR)"},
        src_setup="SET SESSION sql_mode = ''",
    ),
    Case(
        "zero-date-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v datetime)",
        "INSERT INTO t VALUES (1, '0000-00-00 00:00:00'), (2, '2024-01-02 03:04:05')",
        refused="a MariaDB zero date has no equivalent here",
        src_setup="SET SESSION sql_mode = ''",
    ),
    Case(
        "zero-date-mysql-pg",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, v date)",
        "INSERT INTO t VALUES (1, '0000-00-00'), (2, '2024-01-02')",
        refused="a MariaDB zero date has no equivalent here",
        dst_ddl="CREATE TABLE t (id bigint PRIMARY KEY, v date)",
        src_setup="SET SESSION sql_mode = ''",
    ),
    # timestamps with a zone
    _tstz(PG, PG),
    _tstz(MY, PG, created_type="timestamp with time zone"),
    _tstz(PG, MY),
    _tstz(MY, MY),
    # SQLite on either side: its NUMERIC affinity keeps a decimal as a double (15-17 digits)
    Case(
        "numeric-pg-sqlite-created",
        PG,
        LITE,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(38,10))",
        NUMERIC_ROWS,
        refused="column 'v' changes on the way",
    ),
    Case(
        "numeric-small-pg-sqlite-created",
        PG,
        LITE,
        "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(12,2))",
        "INSERT INTO t VALUES (1, 1234567890.12), (2, -0.01), (3, NULL)",
        [Decimal("1234567890.12"), Decimal("-0.01"), None],
        norm=_dec,
    ),
    Case(
        "numeric-small-sqlite-pg-created",
        LITE,
        PG,
        "CREATE TABLE t (id integer PRIMARY KEY, v numeric(12,2))",
        "INSERT INTO t VALUES (1, 1234567890.12), (2, -0.01), (3, NULL)",
        [Decimal("1234567890.12"), Decimal("-0.01"), None],
        norm=lambda v: None if v is None else Decimal(str(v)).quantize(Decimal("0.01")),
    ),
    Case(
        "enum-pg-sqlite-created",
        PG,
        LITE,
        "CREATE TABLE t (id bigint PRIMARY KEY, v mood)",
        "INSERT INTO t VALUES (1, 'sad'), (2, 'Happy Days'), (3, NULL)",
        ["sad", "Happy Days", None],
        src_setup="CREATE TYPE mood AS ENUM ('sad', 'Happy Days')",
    ),
    Case(
        "enum-mysql-sqlite-created",
        MY,
        LITE,
        "CREATE TABLE t (id bigint PRIMARY KEY, v enum('', 'a', 'b c'))",
        "INSERT INTO t VALUES (1, 'a'), (2, ''), (3, 'b c'), (4, NULL)",
        ["a", "", "b c", None],
    ),
    _tstz(PG, LITE),
    _tstz(MY, LITE),
    Case(
        "array-pg-sqlite-created",
        PG,
        LITE,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text[])",
        "INSERT INTO t VALUES (1, ARRAY['a', 'b'])",
        refused="column 'v': its source type TEXT[] has no sqlite type to create it as: convert it",
    ),
    # identifiers
    Case(
        "mixed-case-table-pg-mysql-created",
        PG,
        MY,
        'CREATE TABLE "OrderLines" (id bigint PRIMARY KEY, "Qty" int)',
        'INSERT INTO "OrderLines" VALUES (1, 5), (2, NULL)',
        [5, None],
        table="OrderLines",
        column="Qty",
    ),
    Case(
        "mixed-case-table-pg-mysql",
        PG,
        MY,
        'CREATE TABLE "OrderLines" (id bigint PRIMARY KEY, "Qty" int)',
        'INSERT INTO "OrderLines" VALUES (1, 5), (2, NULL)',
        [5, None],
        "CREATE TABLE `OrderLines` (id bigint PRIMARY KEY, `Qty` int)",
        table="OrderLines",
        column="Qty",
    ),
    Case(
        "mixed-case-table-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE `OrderLines` (id bigint PRIMARY KEY, `Qty` int)",
        "INSERT INTO `OrderLines` VALUES (1, 5), (2, NULL)",
        [5, None],
        table="OrderLines",
        column="Qty",
    ),
    Case(
        "backtick-column-mysql-mysql-created",
        MY,
        MY,
        "CREATE TABLE t (id bigint PRIMARY KEY, `we``ird` text)",
        "INSERT INTO t VALUES (1, 'x'), (2, NULL)",
        ["x", None],
        column="we`ird",
    ),
    Case(
        "backtick-column-mysql-pg-created",
        MY,
        PG,
        "CREATE TABLE t (id bigint PRIMARY KEY, `we``ird` text)",
        "INSERT INTO t VALUES (1, 'x'), (2, NULL)",
        ["x", None],
        column="we`ird",
    ),
    Case(
        "quoted-column-pg-mysql-created",
        PG,
        MY,
        'CREATE TABLE t (id bigint PRIMARY KEY, "we""ird `x`" text)',
        "INSERT INTO t VALUES (1, 'x'), (2, NULL)",
        ["x", None],
        column='we"ird `x`',
    ),
]


# -- raw drivers: reading the values back without Shiftover ---------------------------------------
def _raw_connect(url: str) -> Any:
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == PG:
        return psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database
        )
    if backend in ("mysql", "mariadb"):
        return pymysql.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username,
            password=u.password or "",
            database=u.database,
            charset="utf8mb4",
        )
    return sqlite3.connect(u.database)


def _quote(engine: str, name: str) -> str:
    if engine == MY:
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def raw_values(url: str, engine: str, case: Case) -> list[Any]:
    """Column v in key order, as the engine's own driver returns it (UTC sessions)."""
    column = case.cast.get(engine, "{}").format(_quote(engine, case.column))
    query = f"SELECT {column} FROM {_quote(engine, case.table)} ORDER BY id"
    conn = _raw_connect(url)
    try:
        cur = conn.cursor()
        if engine == PG:
            cur.execute("SET TIME ZONE 'UTC'")
        elif engine == MY:
            cur.execute("SET time_zone = '+00:00'")
        cur.execute(query)
        return [case.norm(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def created_type(url: str, engine: str, case: Case) -> str:
    """The target column's declared type, from the engine's catalogue."""
    conn = _raw_connect(url)
    try:
        cur = conn.cursor()
        if engine == PG:
            cur.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = %s",
                (_quote(PG, case.table), case.column),
            )
        else:
            cur.execute(
                "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                (case.table, case.column),
            )
        declared = str(cur.fetchone()[0])
        if engine == MY:  # MariaDB's JSON is LONGTEXT with a CHECK named after the column
            cur.execute(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() "
                "AND TABLE_NAME = %s AND CONSTRAINT_NAME = %s",
                (case.table, case.column),
            )
            checks = [r[0] for r in cur.fetchall()]
            declared += "".join(f" CHECK {c}" for c in checks)
        return declared
    finally:
        conn.close()


def _setup(url: str, engine: str, case: Case) -> None:
    conn = _raw_connect(url)
    try:
        cur = conn.cursor()
        statements = [s for s in (case.src_setup, case.src_ddl, case.rows) if s]
        if engine == LITE:
            conn.executescript(";\n".join(statements))
        else:
            for s in statements:
                cur.execute(s)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_type_matrix(case: Case, pg_database, mariadb_database, sqlite_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    make = {PG: pg_database, MY: mariadb_database, LITE: sqlite_database}
    source, target = make[case.src](), make[case.dst]()
    _setup(source, case.src, case)
    if case.dst_ddl:
        run_sql(target, case.dst_ddl)
    if case.expected is not None:
        assert raw_values(source, case.src, case) == list(case.expected)  # the fixture itself is right
    m = make_migration(source, target, table=case.table, create_target=case.dst_ddl is None)
    report = rehearse(m.spec, m.mapping, m.source, m.target)
    findings = [str(f) for f in report.findings]
    if case.refused is not None:
        if "has no mysql type" in case.refused or "has no sqlite type" in case.refused:  # and `plan --ddl` says so
            assert target_ddl(m.source, m.target, m.mapping).startswith("-- column 'v': ")
        print(f"\n{case.id}: " + "\n  ".join(findings))  # what docs/TYPES.md quotes
        assert any(case.refused in f and f"column {case.column!r}" in f for f in findings), findings
        forget_reflections()
        has_table = sa.inspect(get_engine(target)).has_table(case.table)
        assert has_table == (case.dst_ddl is not None)  # nothing created
        if has_table:
            assert raw_values(target, case.dst, _count_case(case)) == []
        return
    assert findings == [], "\n".join(findings)
    run_backfill(m)
    forget_reflections()
    diff = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    assert diff.differences == [] and diff.equal
    assert diff.source_rows == diff.target_rows == len(case.expected or ())
    assert raw_values(target, case.dst, case) == raw_values(source, case.src, case) == list(case.expected or ())
    if case.created_type is not None:
        assert created_type(target, case.dst, case) == case.created_type


def _count_case(case: Case) -> Case:
    return Case(case.id, case.src, case.dst, "", "", table=case.table, column="id")


# -- created targets: the primary key in the declared key order ---------------------------------------
@pytest.mark.parametrize(("src", "dst"), [(PG, PG), (PG, MY), (MY, PG), (MY, MY), (LITE, PG), (PG, LITE)])
def test_created_primary_key_follows_the_declared_key_order(  # type: ignore[no-untyped-def]
    src, dst, pg_database, mariadb_database, sqlite_database, make_migration
) -> None:
    make = {PG: pg_database, MY: mariadb_database, LITE: sqlite_database}
    source, target = make[src](), make[dst]()
    run_sql(source, "CREATE TABLE t (b varchar(20) NOT NULL, a integer NOT NULL, v integer, PRIMARY KEY (a, b))")
    run_sql(source, "INSERT INTO t VALUES ('x', 2, 1), ('y', 1, 2)")
    m = make_migration(source, target, table="t", key=["a", "b"], create_target=True)
    assert rehearse(m.spec, m.mapping, m.source, m.target).findings == ()
    run_backfill(m)
    forget_reflections()
    assert sa.inspect(get_engine(target)).get_pk_constraint("t")["constrained_columns"] == ["a", "b"]
    assert diff_tables(m.source, m.target, m.mapping, m.spec.validation).equal


# -- the engine's own text, not the driver's value: '1 mon' is not '30 days' -----------------------------
def test_an_interval_changed_to_an_equal_timedelta_is_a_difference(pg_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """psycopg reads both '1 mon' and '30 days' as timedelta(days=30); PostgreSQL keeps them apart
    ('2024-01-31' + '1 mon' is 2024-02-29, + '30 days' is 2024-03-01)."""
    source, target = pg_database(), pg_database()
    for url in (source, target):
        run_sql(url, "CREATE TABLE t (id bigint PRIMARY KEY, v interval, w int[])")
    run_sql(source, "INSERT INTO t VALUES (1, '1 mon', '{1,2}'), (2, '1 day', '{3}')")
    m = make_migration(source, target, table="t")
    assert rehearse(m.spec, m.mapping, m.source, m.target).findings == ()
    run_backfill(m)
    assert diff_tables(m.source, m.target, m.mapping, m.spec.validation).equal
    run_sql(target, "UPDATE t SET v = '30 days' WHERE id = 1", "UPDATE t SET w = '{3,NULL}' WHERE id = 2")
    diff = diff_tables(m.source, m.target, m.mapping, m.spec.validation)
    assert [(d.key, d.kind, tuple(d.columns)) for d in diff.differences] == [
        ((1,), "changed", ("v",)),
        ((2,), "changed", ("w",)),
    ]


# -- a MariaDB zero date mapped per spec: the fix the refusal gives, followed ---------------------------
@pytest.mark.parametrize("column_type", ["date", "datetime(6)"])
def test_a_zero_date_mapped_per_spec_reaches_postgresql_as_null(  # type: ignore[no-untyped-def]
    column_type, pg_database, mariadb_database, make_migration
) -> None:
    source, target = mariadb_database(), pg_database()
    conn = _raw_connect(source)
    try:
        cur = conn.cursor()
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute(f"CREATE TABLE t (id bigint PRIMARY KEY, v {column_type})")
        cur.execute("INSERT INTO t VALUES (1, '0000-00-00'), (2, '2024-01-02'), (3, NULL)")
        conn.commit()
    finally:
        conn.close()
    pg_type = "date" if column_type == "date" else "timestamp(6)"
    run_sql(target, f"CREATE TABLE t (id bigint PRIMARY KEY, v {pg_type})")
    plain = make_migration(source, target, table="t")
    refused = [str(f) for f in rehearse(plain.spec, plain.mapping, plain.source, plain.target).findings]
    assert len(refused) == 1 and "NULLIF(v, '0000-00-00')" in refused[0]

    m = make_migration(
        source, target, table="t", name="m2", columns=[{"name": "id"}, {"name": "v", "sql": "NULLIF(v, '0000-00-00')"}]
    )
    assert rehearse(m.spec, m.mapping, m.source, m.target).findings == ()
    run_backfill(m)
    assert diff_tables(m.source, m.target, m.mapping, m.spec.validation).equal
    case = Case("zero", MY, PG, "", "", cast={PG: "{}::date"})
    assert raw_values(target, PG, case) == [None, date(2024, 1, 2), None]


def test_nan_in_two_columns_is_named_on_each(pg_database, mariadb_database, make_migration) -> None:  # type: ignore[no-untyped-def]
    """MariaDB's driver refuses a NaN without naming a column: the rehearsal finds the column per row."""
    source, target = pg_database(), mariadb_database()
    run_sql(source, "CREATE TABLE t (id bigint PRIMARY KEY, a numeric(10,2), b numeric(10,2))")
    run_sql(source, "INSERT INTO t VALUES (1, 'NaN', 1), (2, 1, 'NaN'), (3, 'NaN', 2), (4, 1, 1)")
    run_sql(target, "CREATE TABLE t (id bigint PRIMARY KEY, a decimal(10,2), b decimal(10,2))")
    m = make_migration(source, target, table="t")
    findings = sorted(str(f) for f in rehearse(m.spec, m.mapping, m.source, m.target).findings)
    assert len(findings) == 2, findings
    assert "column 'a': the target refused 2 of 4 rehearsed row(s), first key (1,)" in findings[0]
    assert "column 'b': the target refused 1 of 4 rehearsed row(s), first key (2,)" in findings[1]
    assert all("holds no NaN" in f for f in findings)
