"""Normalisation: the rules (and the Python twin) that turn equal data into equal text.

Every compared column gets a ``ColumnRule``: a *kind* decided from the types on both sides
(a CHAR on either side pads, a boolean on either side makes the pair boolean, ...) and, per
side, a SQL expression that renders the value as canonical text, NULL kept as NULL (each
engine's ``canonical_sql`` in ``shiftover/engines/<engine>.py`` writes it). The row
text joins those with a separator and a NULL marker, so NULL and '' hash differently.

    kind        canonical text
    integer     decimal digits
    decimal     fixed scale (the larger declared scale of the two sides)
    float       round(x / float_tolerance) (or the engine's text on a same-engine pair)
    text        the UTF-8 value (CHAR on either side: trailing spaces trimmed)
    boolean     '1' / '0'
    date        YYYY-MM-DD
    time        HH:MM:SS.ffffff
    timestamp   seconds since 1970-01-01 UTC with six decimals ('-1.500000'), truncated to
                timestamp_precision (PostgreSQL 14+ extract(epoch), MariaDB TO_SECONDS)
    json        canonical JSON (same-engine pairs in SQL; cross-engine pairs compared in Python)
    uuid        32 lowercase hex digits
    binary      lowercase hex
    native      the engine's own text (arrays, intervals, bit strings: same engine and declared type only)

SQLite has no md5 and few formatting functions: ``register_sqlite_functions`` adds Python ones
to each connection (``so_norm``, ``so_hash60``, ``so_sum``, ``so_md5``, ``so_digest``). Its
decimals and timestamps are rendered in SQL where that text is provably the twin's, and by
``so_norm`` otherwise (``engines/sqlite.py``); a range digest is one ``so_md5`` call.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from shiftover.errors import DiffError
from shiftover.spec import ValidationSpec

if TYPE_CHECKING:
    from shiftover.engines import EngineDialect

SEP = "\x1f"  # between columns of the row text
NULL_MARK = "\x1e"  # a NULL, distinct from ''
# Between row texts in a segment's digest: the byte 0xFF, which no UTF-8 text holds, so the
# joined bytes split back into the same rows only (a "\n" in a value could fake a row boundary).
ROW_SEP = b"\xff"
PRECISION_UNIT = {"s": "second", "ms": "milliseconds", "us": "microseconds"}
PRECISION_DIVISOR = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EPOCH = datetime(1970, 1, 1)
DECIMAL_DIGITS = 140_000  # PostgreSQL's numeric: up to 131072 digits before the point, 16383 after
NATIVE = "native"  # a type compared by the engine's own text: same engine, same declared type only


@dataclass(frozen=True)
class ColumnRule:
    """How one target column is compared: its kind and each side's canonical-text SQL."""

    target: str
    kind: str
    scale: int | None = None  # decimal
    pad: bool = False  # text: trailing spaces do not count
    in_sql: bool = True  # False: compared in Python only (cross-engine JSON)
    source_sql: str = ""
    target_sql: str = ""
    source_nullable: bool = True  # False: a plain NOT NULL column (its text needs no NULL marker)
    target_nullable: bool = True

    def needs_null_mark(self, dialect: EngineDialect, *, source: bool) -> bool:
        """Whether this side's SQL text can be NULL, so the row text must mark it.

        Skipping the marker where it cannot matter saves a function call per value. Kept where the
        SQL can turn a value into NULL: MariaDB's date functions on zero dates, JSON_NORMALIZE
        on bad JSON, and every SQLite value (its rules run in Python).
        """
        nullable = self.source_nullable if source else self.target_nullable
        return nullable or dialect.may_null_text(self.kind)


def classify(column: str, col_type: sa.types.TypeEngine[Any]) -> str:
    """The kind of one side's column type, or DiffError naming the column and the fixes."""
    t = col_type
    if isinstance(t, sa.Boolean) or (isinstance(t, mysql.TINYINT) and getattr(t, "display_width", None) == 1):
        return "boolean"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, sa.Float | mysql.DOUBLE | mysql.FLOAT | postgresql.DOUBLE_PRECISION | postgresql.REAL):
        return "float"
    if isinstance(t, sa.Numeric):
        return "decimal"
    if isinstance(t, sa.DateTime):
        return "timestamp"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Time):
        return "time"
    if isinstance(t, sa.JSON):
        return "json"
    if isinstance(t, sa.Uuid):
        return "uuid"
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return "binary"
    if isinstance(t, sa.CHAR | sa.NCHAR):
        return "char"
    if isinstance(t, sa.String | sa.Enum):
        return "text"
    if isinstance(t, sa.ARRAY | sa.Interval | postgresql.INTERVAL | postgresql.BIT | mysql.BIT):
        return NATIVE
    raise DiffError(
        f"column {column!r} has type {t!r}, which has no normalisation rule; "
        "exclude it (validation.exclude), or map it through a transform to a supported type "
        "(integer, decimal, float, text, boolean, date, time, timestamp, json, uuid, binary)"
    )


def native_refused(column: str, declared: str = "") -> DiffError:
    """Why an array, interval or bit string column cannot be compared (another kind, engine or
    declared type on the other side, or a SQL expression), and the fix; ``declared``: its type."""
    what = f"an array, interval or bit string ({declared})" if declared else "an array, interval or bit string"
    return DiffError(
        f"column {column!r} is {what} compared only with the same declared type on the same engine; convert "
        "it in the mapping (columns[].sql, e.g. to text or JSON) or exclude it (validation.exclude)"
    )


def pair_kind(column: str, source_kind: str | None, target_kind: str) -> str:
    """The kind both sides are compared as (``source_kind`` None: a SQL-expression column)."""
    kinds = {target_kind} if source_kind is None else {source_kind, target_kind}
    if NATIVE in kinds and (len(kinds) > 1 or source_kind is None):
        raise native_refused(column)
    if len(kinds) == 1:
        kind = kinds.pop()
        return "text" if kind == "char" else kind
    if kinds == {"char", "text"}:
        return "text"  # compared with trailing spaces trimmed (the rule's pad)
    if kinds == {"boolean", "integer"}:
        return "boolean"  # MySQL/SQLite store booleans as integers
    if kinds <= {"integer", "decimal"}:
        return "decimal"
    if kinds <= {"integer", "decimal", "float"}:
        return "float"
    if kinds == {"timestamp", "date"}:
        return "timestamp"
    textual = kinds & {"text", "char"}
    if textual and len(kinds - textual) == 1:
        return (kinds - textual).pop()  # JSON or UUID kept as text, or SQLite TEXT holding dates
    raise DiffError(
        f"column {column!r} is {source_kind} in the source and {target_kind} in the target; "
        "add a transform (columns[].sql) that converts it, or exclude it (validation.exclude)"
    )


def decimal_scale(col_type: sa.types.TypeEngine[Any]) -> int | None:
    return getattr(col_type, "scale", None) if isinstance(col_type, sa.Numeric) else None


def same_scale(rule: ColumnRule, own: str, col_type: Any) -> bool:
    """The column's own text already has the rule's fixed scale (no rounding to pay for)."""
    return own == "decimal" and rule.scale is not None and decimal_scale(col_type) == rule.scale


BIG_STEPS = 1e15  # past this many tolerance steps a float is hashed as its own text (no overflow)


def float_cutoff(o: ValidationSpec) -> str:
    """SQL literal: the magnitude past which a float is hashed as its own text (BIG_STEPS steps)."""
    return repr(BIG_STEPS * (o.float_tolerance or 0.0))


def rule_code(rule: ColumnRule, o: ValidationSpec) -> str:
    """The rule as a short string for the SQLite function ``so_norm`` (kind:arg)."""
    arg: Any = {
        "decimal": rule.scale,
        "float": o.float_tolerance,
        "text": int(rule.pad),
        "timestamp": o.timestamp_precision,
        "time": o.timestamp_precision,
    }.get(rule.kind)
    return f"{rule.kind}:{'' if arg is None else arg}"


# -- the Python twin: used by SQLite's so_norm and by the row compare (diff.equality) ------------------


def canonical_text(kind: str, value: Any, arg: Any = None) -> str | None:
    """The canonical text of one value (same text the SQL renders), None for NULL."""
    if value is None:
        return None
    return _TEXT[kind](value, arg)


def _dec(value: Any, scale: Any) -> str:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    with localcontext(prec=DECIMAL_DIGITS):  # the default context (28 digits) would round both sides alike
        if scale in (None, ""):
            return f"{d.normalize():f}"
        return f"{d.quantize(Decimal(1).scaleb(-int(scale)), rounding=ROUND_HALF_UP):f}"  # as round() in SQL


def _float(value: Any, tol: Any) -> str:
    if tol in (None, "") or not abs(float(value)) < BIG_STEPS * float(tol):
        return repr(float(value))
    return str(round(float(value) / float(tol)))


def _text(value: Any, pad: Any) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)  # byte-exact: no Unicode normalisation
    return text.rstrip(" ") if pad in (1, "1", True) else text


def _bool(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return "1" if value.strip().lower() in ("1", "t", "true", "y", "yes") else "0"
    return "1" if value else "0"


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(str(value))


def _timestamp(value: Any, precision: Any) -> str:
    dt = _as_datetime(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    micros = (dt - _EPOCH) // timedelta(microseconds=1)
    micros -= micros % PRECISION_DIVISOR[precision or "us"]  # floor, as date_trunc does
    seconds, fraction = divmod(abs(micros), 1_000_000)
    return f"{'-' if micros < 0 else ''}{seconds}.{fraction:06d}"


def _date(value: Any, _: Any) -> str:
    return _as_datetime(value).strftime("%Y-%m-%d")


def _time(value: Any, precision: Any) -> str:
    if isinstance(value, time):
        t = value
    elif hasattr(value, "seconds"):  # a timedelta (MySQL TIME)
        total = int(value.total_seconds())
        t = time(total // 3600 % 24, total // 60 % 60, total % 60, value.microseconds)
    else:
        t = time.fromisoformat(str(value))
    div = PRECISION_DIVISOR[precision or "us"]
    return t.replace(microsecond=t.microsecond - t.microsecond % div).strftime("%H:%M:%S.%f")


def _json(value: Any, _: Any) -> str:
    data = json.loads(value) if isinstance(value, str | bytes) else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _uuid(value: Any, _: Any) -> str:
    return value.hex if isinstance(value, uuid.UUID) else str(value).replace("-", "").lower()


def _binary(value: Any, _: Any) -> str:
    return bytes(value).hex()


def _native(value: Any, _: Any) -> str:
    return repr(bytes(value) if isinstance(value, memoryview | bytearray) else value)


_TEXT = {
    "integer": lambda v, _: str(int(v)),
    "decimal": _dec,
    "float": _float,
    "text": _text,
    "boolean": _bool,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "json": _json,
    "uuid": _uuid,
    "binary": _binary,
    NATIVE: _native,
}


# -- SQLite functions ---------------------------------------------------------------------


def hash60(text: str | None) -> int:
    """The first 60 bits of md5(row text) as an integer: what every engine sums."""
    return int.from_bytes(hashlib.md5((text or "").encode()).digest()[:8], "big") >> 4  # 15 hex digits


def _so_norm(code: str, value: Any) -> str | None:
    kind, _, arg = code.partition(":")
    return canonical_text(kind, value, arg or None)


class _Digest:
    """md5 of the UTF-8 row texts joined by the byte 0xFF, in the order they arrive (as
    PostgreSQL's string_agg and MariaDB's GROUP_CONCAT build it); None for no rows."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.rows = 0

    def step(self, text: str | None) -> None:
        if text is not None:
            self.md5.update(ROW_SEP if self.rows else b"")
            self.md5.update(text.encode())
            self.rows += 1

    def finalize(self) -> str | None:
        return self.md5.hexdigest() if self.rows else None


class _ExactSum:
    """SUM without SQLite's 64-bit overflow; returns decimal text."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value: int | None) -> None:
        if value is not None:
            self.total += value

    def finalize(self) -> str:
        return str(self.total)


class _HashSum(_ExactSum):
    """so_sum(so_hash60(text)) in one Python call per row."""

    def step(self, value: str | None) -> None:  # type: ignore[override]
        self.total += hash60(value)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Add so_norm, so_hash60, so_sum, so_hash_sum, so_md5 and so_digest to a sqlite3 connection
    (idempotent)."""
    dbapi_connection.create_function("so_norm", 2, _so_norm, deterministic=True)
    dbapi_connection.create_function("so_hash60", 1, hash60, deterministic=True)
    dbapi_connection.create_aggregate("so_sum", 1, _ExactSum)
    dbapi_connection.create_aggregate("so_hash_sum", 1, _HashSum)
    dbapi_connection.create_function("so_md5", 1, _md5, deterministic=True)
    dbapi_connection.create_aggregate("so_digest", 1, _Digest)


def _md5(text: str | bytes | None) -> str | None:
    """md5 of a row text, or of a range's joined texts (bytes: they hold the 0xFF separator)."""
    if text is None:
        return None
    return hashlib.md5(text if isinstance(text, bytes) else text.encode()).hexdigest()
