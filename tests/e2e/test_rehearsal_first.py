"""The rehearsal is the first step of a run that finds the migration ``planned``: a failed one stops
the run before the new table is created or any flag flips; a resumed run past dual-write does not
rehearse again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders
from shiftover.errors import RehearsalError
from shiftover.flags.routing import Routing, WriteMode, read_flags
from shiftover.phases import Phase

pytestmark = pytest.mark.flows
NAME = "orders-rehearsed"


def write_spec(tmp_path: Path, src: str, dst: str, **over: object) -> Path:
    data: dict[str, object] = {
        "name": NAME,
        "source": {"url": src, "table": "orders"},
        "target": {"url": dst, "table": "orders"},
        "key": ["id"],
        "backfill": {"chunk_rows": 500},
    }
    data.update(over)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def target_rows(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return [repr(tuple(r)) for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id"))]


def test_a_failed_rehearsal_stops_the_run_before_anything_is_written(
    prefect_harness: None, tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    from shiftover.flows.migrate import migrate

    src, dst = sqlite_database(), sqlite_database()
    create_orders(get_engine(src), rows=200)
    create_orders(get_engine(dst), rows=0)
    with get_engine(src).connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM orders WHERE id = 5")).mappings().one()
    with get_engine(dst).begin() as conn:  # a row already under a source key, and a different one
        conn.execute(
            sa.text("INSERT INTO orders VALUES (5, 1, 1.00, 'older', NULL, :created_at, :updated_at)"), dict(row)
        )
    before = target_rows(dst)
    spec_path = write_spec(tmp_path, src, dst, archive={"suffix": "_" + "x" * 80})
    control_url = f"sqlite:///{tmp_path}/control.db"
    with pytest.raises(RehearsalError) as err:
        migrate(str(spec_path), control_url, auto_approve=True, flag_ttl_seconds=0.1)
    assert [f.field for f in err.value.findings] == ["on_existing"]  # SQLite keeps long names
    assert str(err.value.findings[0]).startswith("on_existing: the target table 'orders' already holds rows")
    store = open_store(control_url)
    # the first run was refused before it changed anything: no migration left, its findings are in the error
    assert not store.has_migration(NAME) and store.audit_entries(NAME) == []
    routing = Routing.from_flags(NAME, read_flags(store.engine, prefix=f"{NAME}:"))
    assert routing.writes is not WriteMode.DUAL_OLD_PRIMARY
    assert target_rows(dst) == before


def test_a_passing_rehearsal_runs_once_before_dual_write_and_not_on_resume(
    prefect_harness: None, tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    from shiftover.flows.migrate import migrate

    src, dst = sqlite_database(), pg_database()
    create_orders(get_engine(src), rows=300)
    spec_path = write_spec(tmp_path, src, dst, backfill={"chunk_rows": 500, "create_target": True})
    control_url = f"sqlite:///{tmp_path}/control.db"
    migrate(str(spec_path), control_url, auto_approve=True, stop_after="dual_write", flag_ttl_seconds=0.1)
    store = open_store(control_url)
    assert store.phase(NAME) is Phase.DUAL_WRITING
    [audit] = store.audit_entries(NAME, action="rehearsal")
    assert audit["detail"]["findings"] == [] and audit["detail"]["rows"] > 0
    # the rehearsal went into a temporary table: the run created the real one after it, empty
    assert [a["action"] for a in store.audit_entries(NAME) if a["action"] in ("rehearsal", "create_target")] == [
        "rehearsal",
        "create_target",
    ]
    migrate(str(spec_path), control_url, auto_approve=True, stop_after="backfill", flag_ttl_seconds=0.1)
    assert store.phase(NAME) is Phase.BACKFILLED
    assert len(store.audit_entries(NAME, action="rehearsal")) == 1  # resumed past dual-write: not again
