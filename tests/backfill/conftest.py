"""Helpers for the backfill tests: build a migration over two real databases and compare tables."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shiftover.backfill import Throttle, make_throttle, run_backfill
from shiftover.connect import get_engine
from shiftover.control.store import ControlStore
from shiftover.migration import Migration, open_migration
from shiftover.spec import parse_spec


def control_url(store: ControlStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def run_sql(url: str, *statements: str) -> None:
    with get_engine(url).begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def rows_of(url: str, query: str) -> list[tuple[Any, ...]]:
    with get_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


ITEMS_DDL = "CREATE TABLE items (id bigint PRIMARY KEY, n integer NOT NULL, v varchar(40))"


def fill_items(url: str, n: int) -> None:
    """The ``items`` table on PostgreSQL holding rows ``(g, g, 'v<g>')`` for g in 1..n."""
    run_sql(url, ITEMS_DDL, f"INSERT INTO items SELECT g, g, 'v' || g FROM generate_series(1, {n}) g")


def items_spec(source: str, target: str, name: str, **backfill: Any) -> dict[str, Any]:
    """A spec copying ``items`` (key ``id``) from ``source`` to ``target``."""
    return {
        "name": name,
        "source": {"url": source, "table": "items"},
        "target": {"url": target, "table": "items"},
        "key": "id",
        "backfill": backfill,
    }


def write_items_spec(tmp_path: Path, source: str, target: str, name: str, **backfill: Any) -> str:
    """``items_spec`` as a spec file (JSON is YAML) for the flows, which take a path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(items_spec(source, target, name, **backfill)))
    return str(path)


def start_backfill(migration: Migration, throttle: Throttle | None = None) -> tuple[threading.Thread, dict[str, Any]]:
    """``run_backfill`` in a thread (by default, throttle settings re-read every 0.1 s); the outcome
    gets ``summary`` or ``error`` when it ends."""
    outcome: dict[str, Any] = {}
    throttle = throttle or make_throttle(migration, refresh_seconds=0.1)

    def work() -> None:
        try:
            outcome["summary"] = run_backfill(migration, throttle=throttle)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


@pytest.fixture
def make_migration(control_store: ControlStore) -> Callable[..., Migration]:
    """Build a migration between two URLs (same table name unless told), registered in the control store."""

    def make(
        source: str,
        target: str,
        *,
        table: str = "items",
        key: Any = "id",
        target_table: str | None = None,
        name: str = "m1",
        **fields: Any,
    ) -> Migration:
        data: dict[str, Any] = {
            "name": name,
            "source": {"url": source, "table": table},
            "target": {"url": target, "table": target_table or table},
            "key": key,
        }
        backfill = {
            k: fields.pop(k)
            for k in list(fields)
            if k
            in {
                "chunk_rows",
                "concurrency",
                "max_rows_per_second",
                "target_chunk_seconds",
                "nice_ratio",
                "lag_query",
                "lag_threshold",
                "create_target",
            }
        }
        data["backfill"] = backfill
        data.update(fields)
        spec = parse_spec(data)
        return open_migration(spec, control_url(control_store), require_target=not backfill.get("create_target"))

    return make


def dialect(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def child_pid(worker: str) -> int:
    """The pid of this process's child running as ``worker`` (a worker's id is in its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and worker.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no child process runs as {worker}")
