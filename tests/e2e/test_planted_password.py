"""Issue 16's proof that no password is kept or shown.

A full migration from MariaDB to PostgreSQL, and one from PostgreSQL to MariaDB, with the control
store on the new store's server: all three behind password-protected roles and named only by
reference (``${VAR}`` whole and inside a URL, ``file:``), run through the CLI under Prefect's test
harness. Then every output channel is searched for the planted password: the CLI's output,
everything this process printed or logged, the flow runs' parameters and states, task runs, logs,
artifacts and events read back through the Prefect API, and every row of every control-store table.

PostgreSQL here trusts 127.0.0.1, so it does not check the password it is sent; MariaDB does (a
wrong password is refused below), so the references really carry the credential to the driver.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from shiftover.connect import dispose_engines, get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders
from shiftover.mapping import forget_reflections
from shiftover.phases import Phase

pytestmark = pytest.mark.flows

PG_ADMIN_URL = os.environ.get("SHIFTOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("SHIFTOVER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/mysql")
PLANTED = f"Pl4nted-{uuid.uuid4().hex[:12]}-pw"
ROWS = 3_000


@dataclass(frozen=True)
class Roles:
    """The URLs as the password-protected roles (the password inline: only the test holds these)."""

    old_url: str
    new_url: str
    control_url: str  # on the new store's server, another database
    mariadb_url: str  # one on MariaDB, which checks passwords

    @property
    def new_url_by_password_reference(self) -> str:
        """The new store's URL with only its password replaced by a ``${VAR}`` reference."""
        as_written = sa.make_url(self.new_url).set(password="PASSWORD").render_as_string(hide_password=False)
        return as_written.replace(":PASSWORD@", ":${SO_PLANTED_PASSWORD}@")


@pytest.fixture(params=["mariadb->postgres", "postgres->mariadb"])
def password_roles(request: pytest.FixtureRequest) -> Iterator[Roles]:
    """A MariaDB user and a PostgreSQL role with the planted password, each with two fresh
    databases (data and control store); all dropped at the end."""
    pg_admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    my_admin = sa.create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    tag = uuid.uuid4().hex[:8]
    user, data_db, control_db = f"so_pw_{tag}", f"so_pw_data_{tag}", f"so_pw_ctl_{tag}"
    hosts = ("%", "localhost", "127.0.0.1")
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {user} LOGIN PASSWORD '{PLANTED}'"))
        for db in (data_db, control_db):
            conn.execute(sa.text(f"CREATE DATABASE {db} OWNER {user}"))
    with my_admin.connect() as conn:
        for db in (data_db, control_db):
            conn.execute(sa.text(f"CREATE DATABASE {db}"))
        for host in hosts:
            conn.execute(sa.text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{PLANTED}'"))
            for db in (data_db, control_db):
                conn.execute(sa.text(f"GRANT ALL ON {db}.* TO '{user}'@'{host}'"))
    as_role = {"username": user, "password": PLANTED}
    pg, my = sa.make_url(PG_ADMIN_URL).set(**as_role), sa.make_url(MARIADB_ADMIN_URL).set(**as_role)
    old, new = (my, pg) if request.param == "mariadb->postgres" else (pg, my)
    try:
        yield Roles(
            old_url=old.set(database=data_db).render_as_string(hide_password=False),
            new_url=new.set(database=data_db).render_as_string(hide_password=False),
            control_url=new.set(database=control_db).render_as_string(hide_password=False),
            mariadb_url=my.set(database=data_db).render_as_string(hide_password=False),
        )
    finally:
        dispose_engines()
        forget_reflections()
        with pg_admin.connect() as conn:
            for db in (data_db, control_db):
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {user}"))
        with my_admin.connect() as conn:
            for db in (data_db, control_db):
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
            for host in hosts:
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        pg_admin.dispose()
        my_admin.dispose()


def write_spec(tmp_path: Path, new_url: str) -> Path:
    data = {
        "name": "orders-planted",
        "source": {"url": "${SO_PLANTED_OLD_URL}", "table": "orders"},
        "target": {"url": new_url, "table": "orders"},
        "key": ["id"],
        "backfill": {"chunk_rows": 1_000, "concurrency": 2},
        "validation": {"segments": 4},
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status"}},
        ],
        "canary": {"steps": [50, 100], "soak_seconds": 0},
        "approvals": {"timeout_seconds": 60, "auto": True},
        "archive": {"retention_days": 0},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_no_password_reaches_any_output_channel(
    prefect_harness: None,
    password_roles: Roles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shiftover.cli import app

    caplog.set_level(logging.DEBUG)
    roles = password_roles
    refused = sa.make_url(roles.mariadb_url).set(password="not-the-password")
    with pytest.raises(sa.exc.OperationalError):  # MariaDB checks the password: the credential is real
        sa.create_engine(refused, poolclass=sa.pool.NullPool).connect().close()
    create_orders(get_engine(roles.old_url), rows=ROWS)
    create_orders(get_engine(roles.new_url), rows=0)
    dispose_engines()

    monkeypatch.setenv("SO_PLANTED_OLD_URL", roles.old_url)
    monkeypatch.setenv("SO_PLANTED_PASSWORD", PLANTED)
    secret_file = tmp_path / "control-url"
    secret_file.write_text(roles.control_url + "\n")
    control_ref = f"file:{secret_file}"
    spec_path = write_spec(tmp_path, roles.new_url_by_password_reference)

    cli = CliRunner()
    outputs = []
    for args in (
        ["check", str(spec_path)],
        ["plan", str(spec_path), "--ddl"],
        ["run", str(spec_path), "--auto-approve", "--control-url", control_ref],
        ["status", "orders-planted", "--control-url", control_ref],
        ["run", str(spec_path), "--control-url", control_ref],  # finished: answered from the control store
    ):
        out = cli.invoke(app, args)
        outputs.append(out.output)
        assert out.exit_code == 0, (args, out.output, out.exception)
    assert "DECOMMISSIONED" in outputs[3].upper() and "nothing left to do" in outputs[4]

    store = open_store(control_ref)
    assert store.phase("orders-planted") is Phase.DECOMMISSIONED  # it really ran to the end
    assert [a["detail"]["step"] for a in store.audit_entries("orders-planted", action="approval")] == [
        "switch_writes",
        "stop_old_writes",
        "drop",
    ]
    with get_engine("${SO_PLANTED_OLD_URL}").connect() as conn:  # the old table was dropped
        assert not sa.inspect(conn).has_table("orders")

    channels: dict[str, str] = {"cli": "\n".join(outputs)}
    channels["control store"] = control_store_rows(control_ref)
    channels.update(prefect_channels())
    captured = capsys.readouterr()
    channels["stdout/stderr"] = captured.out + captured.err
    channels["python logging"] = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)

    # Not vacuous: each channel holds this migration's own traces (the references, its name).
    assert "${SO_PLANTED_OLD_URL}" in channels["control store"]
    assert control_ref in channels["flow runs"]
    assert "orders-planted" in channels["logs"] and "orders-planted" in channels["artifacts"]
    leaks = [name for name, text in channels.items() if PLANTED in text]
    assert leaks == [], f"the planted password appears in: {leaks}"


def control_store_rows(control_ref: str) -> str:
    """Every row of every table in the control store, as text."""
    engine = get_engine(control_ref)
    meta = sa.MetaData()
    meta.reflect(engine)
    assert {"so_migrations", "so_audit_log", "so_gate_results"} <= set(meta.tables)
    lines = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            lines += [f"{table.name}: {tuple(row)}" for row in conn.execute(sa.select(table))]
    return "\n".join(lines)


def prefect_channels() -> dict[str, str]:
    """Everything the Prefect server holds that a reader of its API sees, as text per channel."""
    from prefect import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        http = client._client
        return {
            "flow runs": _all(http, "/flow_runs/filter"),
            "task runs": _all(http, "/task_runs/filter"),
            "logs": _all(http, "/logs/filter"),
            "artifacts": _all(http, "/artifacts/filter"),
            "variables and blocks": _all(http, "/variables/filter") + _all(http, "/block_documents/filter"),
            "events": _events(http),
        }


def _all(http: Any, path: str) -> str:
    rows: list[Any] = []
    while True:
        page = http.post(path, json={"limit": 200, "offset": len(rows)}).json()
        rows += page
        if len(page) < 200:
            return json.dumps(rows, default=str)


def _events(http: Any) -> str:
    page = http.post("/events/filter", json={"limit": 50}).json()
    pages = [page.get("events", [])]
    while page.get("next_page") and len(pages) < 200:
        page = http.get(page["next_page"]).json()
        pages.append(page.get("events", []))
    return json.dumps(pages, default=str)


def test_a_secret_block_reference_resolves_through_the_flows_resolver(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from shiftover.credentials import resolve
    from shiftover.errors import CredentialError
    from shiftover.flows.credentials import register_block_resolver

    url = f"sqlite:///{tmp_path}/old.db"
    Secret(value=url).save("so-test-old-url", overwrite=True)
    register_block_resolver()
    assert resolve("block:secret/so-test-old-url") == url
    assert resolve("block:so-test-old-url") == url
    with pytest.raises(CredentialError, match="cannot load the Secret block") as err:
        resolve("block:secret/so-test-never-saved")
    assert err.value.field == "block:secret/so-test-never-saved"
    with pytest.raises(CredentialError, match="only Secret blocks"):
        resolve("block:json/so-test-old-url")
    engine = get_engine("block:secret/so-test-old-url")
    assert engine.url.database == f"{tmp_path}/old.db"
    dispose_engines()


def test_a_flow_refuses_an_inline_control_url_and_hides_it_in_its_parameters(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect import get_client

    from shiftover.errors import CredentialError
    from shiftover.flows.migrate import migrate

    inline = f"postgresql+psycopg://so:{PLANTED}@127.0.0.1:1/control"
    with pytest.raises(CredentialError) as err:
        migrate(str(tmp_path / "never-read.yaml"), inline)
    assert err.value.field == "control_url" and PLANTED not in str(err.value)
    with get_client(sync_client=True) as client:
        runs = client._client.post("/flow_runs/filter", json={"limit": 200, "sort": "START_TIME_DESC"}).json()
    [run] = [r for r in runs if r["parameters"].get("spec_path") == str(tmp_path / "never-read.yaml")]
    assert run["parameters"]["control_url"] == "postgresql+psycopg://so:***@127.0.0.1:1/control"
    leaks = [name for name, text in prefect_channels().items() if PLANTED in text]
    assert leaks == [], f"the refused password stays in: {leaks}"  # no Prefect event holds parameters
