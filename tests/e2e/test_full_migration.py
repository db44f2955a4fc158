"""Issue 2's proof: a full migration on real databases while an application keeps writing.

PostgreSQL -> PostgreSQL and MariaDB -> PostgreSQL (and SQLite -> SQLite, the embedded
default), each ending with a zero diff; and a failing blocking gate that stops the flow
before any later stage runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders
from shiftover.demo.app import LiveApplication, writes
from shiftover.demo.run import count_differences
from shiftover.dualwrite import DualWriter
from shiftover.errors import GateError
from shiftover.flags.routing import WriteMode, read_routing
from shiftover.migration import load_migration
from shiftover.phases import Phase
from shiftover.spec import load_spec

pytestmark = pytest.mark.flows

ROWS = 6_000


def write_spec(tmp_path: Path, src: str, dst: str, **over: object) -> Path:
    data: dict[str, object] = {
        "name": "orders-e2e",
        "source": {"url": src, "table": "orders"},
        "target": {"url": dst, "table": "orders"},
        "key": ["id"],
        "backfill": {"chunk_rows": 1_000, "concurrency": 2},
        "validation": {"segments": 8},
        "canary": {"steps": [10, 100], "soak_seconds": 0.5},
        "approvals": {"timeout_seconds": 60},
    }
    data.update(over)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(params=["postgres->postgres", "mariadb->postgres", "sqlite->sqlite"])
def databases(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> tuple[str, str]:
    src_kind, dst_kind = request.param.split("->")
    src, dst = database_url(src_kind), database_url(dst_kind)
    create_orders(get_engine(src), rows=ROWS)
    create_orders(get_engine(dst), rows=0)
    return src, dst


def test_full_migration_under_live_writes(prefect_harness: None, tmp_path: Path, databases: tuple[str, str]) -> None:
    from shiftover.flows.decommission import decommission
    from shiftover.flows.migrate import migrate
    from shiftover.flows.reconcile import reconcile

    spec_path = write_spec(tmp_path, *databases)
    control_url = f"sqlite:///{tmp_path}/control.db"
    spec = load_spec(spec_path)
    writer = DualWriter.from_spec(spec, control_url)
    app = LiveApplication(writer, range(1, ROWS + 300), requests_per_second=150).start()
    try:
        migrate(
            str(spec_path),
            control_url,
            auto_approve=True,
            stop_after="cutover",
            poll_interval_seconds=1,
            flag_ttl_seconds=0.5,
        )
    finally:
        stats = app.stop()
        writer.close()
    assert stats.total_failed == 0, stats.errors[:3]
    assert writes(stats) > 50  # the application really wrote during the migration
    store = open_store(control_url)
    assert store.phase(spec.name) is Phase.WRITES_SWITCHED
    assert read_routing(store.engine, spec.name).writes is WriteMode.DUAL_NEW_PRIMARY

    reconcile(str(spec_path), control_url)
    assert count_differences(load_migration(str(spec_path), control_url)) == 0

    decommission(str(spec_path), control_url, retention_seconds=0, auto_approve=True)
    assert store.phase(spec.name) is Phase.DECOMMISSIONED
    assert reconcile(str(spec_path), control_url)["note"] == "archived: nothing to reconcile"  # the schedule fires on
    phases = [h.phase for h in store.history(spec.name)]
    assert phases[:5] == ["planned", "dual_writing", "backfilling", "backfilled", "validated"]
    assert phases[-4:] == ["writes_switched", "old_writes_stopped", "archived", "decommissioned"]
    approvals = store.audit_entries(spec.name, action="approval")
    assert [a["detail"]["step"] for a in approvals] == ["switch_writes", "stop_old_writes", "drop"]
    assert all(a["detail"]["automatic"] for a in approvals)


def test_failed_blocking_gate_stops_before_any_later_stage(
    prefect_harness: None, tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    from shiftover.flows.migrate import migrate

    src, dst = sqlite_database(), sqlite_database()
    create_orders(get_engine(src), rows=500)
    create_orders(get_engine(dst), rows=0)
    impossible = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "amount", "min_value": 0, "max_value": 1},
    }
    spec_path = write_spec(tmp_path, src, dst, expectations=[impossible])
    control_url = f"sqlite:///{tmp_path}/control.db"
    with pytest.raises(GateError) as err:
        migrate(str(spec_path), control_url, auto_approve=True, flag_ttl_seconds=0.1)
    assert err.value.gate == "expectations"
    store = open_store(control_url)
    assert store.phase("orders-e2e") is Phase.BACKFILLED
    phases = {h.phase for h in store.history("orders-e2e")}
    assert not phases & {"validated", "shadow_reading", "reads_canary", "writes_switched"}
    routing = read_routing(store.engine, "orders-e2e")
    assert (routing.reads_percent, routing.shadow, routing.writes) == (0.0, False, WriteMode.DUAL_OLD_PRIMARY)


def test_target_created_from_the_source_schema_before_dual_write(
    prefect_harness: None, tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    import sqlalchemy as sa

    from shiftover.flows.migrate import migrate

    src, dst = sqlite_database(), pg_database()
    create_orders(get_engine(src), rows=1_500)
    spec_path = write_spec(tmp_path, src, dst, backfill={"chunk_rows": 500, "create_target": True})
    control_url = f"sqlite:///{tmp_path}/control.db"
    migrate(str(spec_path), control_url, auto_approve=True, stop_after="validate", flag_ttl_seconds=0.1)
    store = open_store(control_url)
    assert store.phase("orders-e2e") is Phase.VALIDATED
    assert [a["detail"]["table"] for a in store.audit_entries("orders-e2e", action="create_target")] == ["orders"]
    columns = {c["name"]: c for c in sa.inspect(get_engine(dst)).get_columns("orders")}
    assert set(columns) == {"id", "customer_id", "amount", "status", "note", "created_at", "updated_at"}
    assert count_differences(load_migration(str(spec_path), control_url)) == 0


def test_unknown_stop_after_is_refused_before_anything_runs(
    prefect_harness: None, tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    from shiftover.flows.migrate import migrate

    src, dst = sqlite_database(), sqlite_database()
    create_orders(get_engine(src), rows=10)
    create_orders(get_engine(dst), rows=0)
    spec_path = write_spec(tmp_path, src, dst)
    control_url = f"sqlite:///{tmp_path}/control.db"
    with pytest.raises(ValueError, match=r"stop_after='validation' is no stage or stage flow; use one of dual_write, "):
        migrate(str(spec_path), control_url, stop_after="validation")
    assert not (tmp_path / "control.db").exists()  # refused before the control store was even opened
