"""Versioned flags in the control store. Every write bumps the version and is audited.

A write may name the version it expects (compare-and-set), so two runs cannot both flip
the same flag from the same state: the loser gets ``FlagError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.control import schema
from shiftover.control.store import Fence, _audit, utcnow
from shiftover.errors import FlagError


@dataclass(frozen=True)
class Flag:
    key: str
    value: Any
    version: int
    updated_at: datetime
    updated_by: str


def get_flag(engine: Engine, key: str) -> Flag | None:
    t = schema.flags
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.key == key)).first()
    return Flag(**row._mapping) if row is not None else None


def read_flags(engine: Engine, prefix: str = "") -> dict[str, Flag]:
    """Every flag whose key starts with ``prefix``: one query, for caches to refresh from."""
    t = schema.flags
    query = sa.select(t)
    if prefix:
        query = query.where(t.c.key.startswith(prefix, autoescape=True))
    with engine.connect() as conn:
        return {r.key: Flag(**r._mapping) for r in conn.execute(query)}


def set_flag(
    engine: Engine,
    key: str,
    value: Any,
    actor: str,
    *,
    migration: str = "",
    expected_version: int | None = None,
    reason: str = "",
    fence: Fence | None = None,
) -> int:
    """Write a flag; returns its new version. ``expected_version=0`` means 'must not exist yet'.

    With a ``fence`` (the flipping run's lease), the write happens only while that lease holds,
    checked in the flag's own transaction: a run overtaken by a rollback flips nothing."""
    t = schema.flags
    with engine.begin() as conn:
        if fence is not None:
            fence.check(conn)
        current = conn.execute(sa.select(t.c.version, t.c.value).where(t.c.key == key)).first()
        version = current.version if current else 0
        if expected_version is not None and expected_version != version:
            raise FlagError(
                f"flag {key!r} is at version {version}, not {expected_version}: "
                "another run changed it first; re-read and decide again"
            )
        now = utcnow()
        if current is None:
            conn.execute(t.insert().values(key=key, value=value, version=1, updated_at=now, updated_by=actor))
        else:
            done = conn.execute(
                t.update()
                .where(t.c.key == key, t.c.version == version)
                .values(value=value, version=version + 1, updated_at=now, updated_by=actor)
            )
            if done.rowcount != 1:
                raise FlagError(f"flag {key!r} changed while it was being written; re-read and decide again")
        detail = {
            "flag": key,
            "value": value,
            "previous": current.value if current else None,
            "version": version + 1,
            "reason": reason,
        }
        _audit(conn, migration or key.split(":", 1)[0], actor, "flag", detail)
    return version + 1
