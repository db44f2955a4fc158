"""The CLI parses, calls one function and reports; bad input exits 2 with the reason."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from shiftover.cli import app
from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders
from shiftover.phases import Phase

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "orders.yaml")
runner = CliRunner()


def test_plan_prints_stages_without_touching_data() -> None:
    result = runner.invoke(app, ["plan", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert "switch_writes" in result.output and "[APPROVAL]" in result.output


def test_plan_of_a_bad_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: m\nsource: {url: 'sqlite:///a.db', table: t}\ntarget: {url: 'sqlite:///b.db', table: t}\n"
        "key: id\ncanary: {steps: [10, 5, 100]}\n"
    )
    result = runner.invoke(app, ["plan", str(spec)])
    assert result.exit_code == 2
    assert "spec field 'canary.steps': canary steps must increase: 10 is followed by 5" in result.output
    assert not (tmp_path / "a.db").exists()


def orders_move(tmp_path: Path, rest: str) -> Path:
    """Old orders (3 rows) and an empty new table in two SQLite files; a spec moving one to the other,
    ``rest`` the spec's lines after its key."""
    old, new = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    create_orders(get_engine(old), rows=3)
    create_orders(get_engine(new), rows=0)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: m\nsource: {{url: '{old}', table: orders}}\ntarget: {{url: '{new}', table: orders}}\nkey: id\n{rest}"
    )
    return spec


def test_check_resolves_the_mapping_against_the_databases(tmp_path: Path) -> None:
    spec = orders_move(
        tmp_path, "columns: [id, {name: amount, target: amount}, customer_id, status, created_at, updated_at]\n"
    )
    ok = runner.invoke(app, ["check", str(spec)])
    assert ok.exit_code == 0 and "ok: orders -> orders, key ['id']" in ok.output
    assert "rehearsal: 3 sample rows written and rolled back" in ok.output
    spec.write_text(spec.read_text().replace("table: orders}\nkey", "table: ordrs}\nkey"))
    bad = runner.invoke(app, ["check", str(spec)])
    assert bad.exit_code == 2 and "spec field 'target.table': no table 'ordrs'" in bad.output


def test_check_refuses_a_distributed_backfill_with_a_sqlite_control_store(tmp_path: Path) -> None:
    """The run would refuse it before its first stage; check says so first, creating no store."""
    spec = orders_move(tmp_path, "backfill: {distributed: {workers: 2}}\n")
    control = tmp_path / "control.db"
    refused = runner.invoke(app, ["check", str(spec), "--control-url", f"sqlite:///{control}"])
    assert refused.exit_code == 2, refused.output
    assert "spec field 'backfill.distributed': a distributed backfill needs a PostgreSQL" in refused.output
    assert not control.exists()


def test_check_prints_every_problem_the_rehearsal_finds_and_writes_nothing(tmp_path: Path) -> None:
    """Two problems that ``check`` passed before the rehearsal: an unmapped NOT NULL column and a row
    already under a source key. Both are printed; the exit code is 1; the target keeps its one row."""
    old, new = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/new.db"
    create_orders(get_engine(old), rows=20)
    create_orders(get_engine(new), rows=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: m\nsource: {{url: '{old}', table: orders}}\ntarget: {{url: '{new}', table: orders}}\n"
        "key: id\ncolumns: [id, amount, customer_id, status, created_at]\n"
    )
    result = runner.invoke(app, ["check", str(spec)])
    assert result.exit_code == 1
    assert "FAILED: orders -> orders" in result.output
    assert "columns: target column 'updated_at' is NOT NULL without a default" in result.output
    assert "on_existing: the target table 'orders' already holds rows, 1 of the 20 sampled" in result.output
    assert "2 problem(s)" in result.output
    with get_engine(new).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 1


def test_status_shows_phase_routing_and_history(tmp_path: Path) -> None:
    control = f"sqlite:///{tmp_path}/control.db"
    store = open_store(control)
    store.register("orders-v2", {"name": "orders-v2"})
    store.transition("orders-v2", Phase.DUAL_WRITING, "alice", "go")
    result = runner.invoke(app, ["status", "orders-v2", "--control-url", control])
    assert result.exit_code == 0, result.output
    assert "orders-v2: dual_writing" in result.output
    assert "routing: writes old_only, reads 0% new, shadow off" in result.output
    assert "dual_writing (alice) go" in result.output
    unknown = runner.invoke(app, ["status", "nope", "--control-url", control])
    assert unknown.exit_code == 2 and "no migration named 'nope'" in unknown.output


def test_status_creates_no_store_where_there_is_none(tmp_path: Path) -> None:
    """Reading is not writing: a status of a store not created yet (a mistyped path, a first look)
    lists no migration, refuses a named one as an existing store would, and leaves no file."""
    import json

    control = f"sqlite:///{tmp_path}/control.db"
    listing = runner.invoke(app, ["status", "--json", "--control-url", control])
    assert listing.exit_code == 0, listing.output
    assert json.loads(listing.output)["migrations"] == []
    named = runner.invoke(app, ["status", "orders-v2", "--control-url", control])
    assert named.exit_code == 2 and "no migration named 'orders-v2'" in named.output
    assert list(tmp_path.iterdir()) == []


def test_plan_ddl_shows_the_target_table_and_capture_triggers_before_creating_anything(
    tmp_path: Path,
    pg_database,
    mariadb_database,  # type: ignore[no-untyped-def]
) -> None:
    import sqlalchemy as sa

    src, dst = pg_database(), mariadb_database()
    create_orders(get_engine(src), rows=2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: m\nsource: {{url: '{src}', table: orders}}\ntarget: {{url: '{dst}', table: orders}}\n"
        "key: id\nbackfill: {create_target: true}\n"
    )
    result = runner.invoke(app, ["plan", str(spec), "--ddl"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE orders (" in result.output and "DATETIME(6) NOT NULL" in result.output
    assert "CREATE TRIGGER so_capture_orders" in result.output
    # the control store's least privilege (tests/app/test_least_privilege.py runs the app under it)
    assert 'GRANT SELECT ON "public"."so_flags", "public"."so_alembic_version" TO "shiftover_app";' in result.output
    assert "GRANT SELECT ON `shiftover`.`so_flags` TO 'shiftover_app'@'%';" in result.output
    assert not sa.inspect(get_engine(dst)).has_table("orders")  # shown, not created
    assert "-- target table: created by the dual-write stage" in result.output
    check = runner.invoke(app, ["check", str(spec)])  # passes before the first run: the table will be created
    assert check.exit_code == 0 and "does not exist yet: the dual-write stage creates it" in check.output, check.output
    spec.write_text(spec.read_text().replace("create_target: true", "create_target: false"))
    off = runner.invoke(app, ["plan", str(spec), "--ddl"])
    assert "NOT created by Shiftover" in off.output and "CREATE TABLE orders (" in off.output


def test_throttle_pauses_and_retunes_through_the_flag_store(tmp_path: Path) -> None:
    from shiftover.backfill.throttle import throttle_flag_key
    from shiftover.flags.store import get_flag

    control = f"sqlite:///{tmp_path}/control.db"
    open_store(control).register("m", {"name": "m"})  # a started migration (an unknown one is refused)
    paused = runner.invoke(app, ["throttle", "m", "--pause", "--max-rows-per-second", "500", "--control-url", control])
    assert paused.exit_code == 0, paused.output
    flag = get_flag(open_store(control).engine, throttle_flag_key("m"))
    assert flag is not None and flag.value == {"paused": True, "max_rows_per_second": 500.0}
    resumed = runner.invoke(app, ["throttle", "m", "--resume", "--control-url", control])
    assert resumed.exit_code == 0 and '"paused": false' in resumed.output
    bad = runner.invoke(app, ["throttle", "m", "--chunk-rows", "3", "--control-url", control])
    assert bad.exit_code == 2 and "chunk_rows must be between" in bad.output
    both = runner.invoke(app, ["throttle", "m", "--pause", "--resume", "--control-url", control])
    assert both.exit_code == 2 and "contradict" in both.output
    nice = runner.invoke(app, ["throttle", "m", "--nice-ratio", "0.5", "--control-url", control])
    assert nice.exit_code == 0, nice.output
    flag = get_flag(open_store(control).engine, throttle_flag_key("m"))
    assert flag is not None and flag.value == {"paused": False, "max_rows_per_second": 500.0, "nice_ratio": 0.5}
    worse = runner.invoke(app, ["throttle", "m", "--nice-ratio", "-1", "--control-url", control])
    assert worse.exit_code == 2 and "nice_ratio must be between 0 and 100" in worse.output


def test_run_refuses_an_unknown_stop_after(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", EXAMPLE, "--stop-after", "nope", "--control-url", f"sqlite:///{tmp_path}/control.db"]
    )
    assert result.exit_code == 2
    assert "stop_after='nope' is no stage or stage flow" in result.output
    assert not (tmp_path / "control.db").exists()


def test_a_failed_run_ends_in_one_error_line_without_tracebacks(tmp_path: Path) -> None:
    """Prefect's console logs a failed flow's traceback (80-110 lines); the CLI keeps it for the
    API logs and --debug, so the terminal shows what failed and the last line says it."""
    import os
    import subprocess
    import sys

    create_orders(get_engine(f"sqlite:///{tmp_path}/old.db"), rows=3)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: m\nsource: {url: 'sqlite:///old.db', table: ordrs}\ntarget: {url: 'sqlite:///new.db', table: orders}\n"
        "key: id\nbackfill: {create_target: true}\n"
    )
    shiftover = str(Path(sys.executable).parent / "shiftover")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    run = subprocess.run(
        [shiftover, "run", "spec.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    error = "error: spec field 'source.table': no table 'ordrs' in sqlite:///old.db"
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and error in run.stderr
    assert "Encountered exception during execution" in run.stderr  # Prefect's own line stays, shortened
    debug = subprocess.run(
        [shiftover, "--debug", "check", "spec.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr and error in debug.stderr


def test_a_relative_control_url_is_taken_from_here_and_shown(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/.shiftover/control.db")
    store.register("orders-v2", {"name": "orders-v2"})
    result = runner.invoke(app, ["status", "--control-url", "sqlite:///.shiftover/control.db"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"control store: sqlite:///{tmp_path}/.shiftover/control.db\n")
    assert "orders-v2: planned" in result.output


def test_plan_and_status_speak_json_for_scripts(tmp_path: Path) -> None:
    import json

    plan = runner.invoke(app, ["plan", EXAMPLE, "--json"])
    assert plan.exit_code == 0, plan.output
    data = json.loads(plan.output)
    stages = {s["name"]: s for s in data["stages"]}
    assert stages["switch_writes"]["approval"] and stages["drop"]["reversible"] is False
    assert stages["dual_write"]["undo"] == "writes flag -> old_only"

    control = f"sqlite:///{tmp_path}/control.db"
    store = open_store(control)
    store.register("orders-v2", {"name": "orders-v2"})
    store.transition("orders-v2", Phase.DUAL_WRITING, "alice", "go")
    status = runner.invoke(app, ["status", "orders-v2", "--control-url", control, "--json", "--history"])
    assert status.exit_code == 0, status.output
    [m] = json.loads(status.output)["migrations"]
    assert m["phase"] == "dual_writing" and m["routing"]["writes"] == "old_only" and m["held_by"] is None
    assert [e["action"] for e in m["audit"]] == ["phase", "phase"]  # registered, then dual-write
    text = runner.invoke(app, ["status", "orders-v2", "--control-url", control, "--history"])
    assert "audit log:" in text.output and "phase=dual_writing" in text.output
