"""The control store's schema is versioned: only ``shiftover control upgrade`` moves it; an
application or a flow facing another revision refuses with that command in the message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from shiftover.cli import app
from shiftover.connect import get_engine
from shiftover.control.store import _MIGRATIONS_DIR, ControlStore, head_revision, open_store
from shiftover.errors import ControlStoreError


def store_at(url: str, revision: str) -> ControlStore:
    store = ControlStore(get_engine(url))
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return store


def test_an_old_store_is_refused_until_the_upgrade_command_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    store_at(url, "0001").register("m", {"name": "m"})
    for create in (True, False):  # neither a flow nor an application upgrades it
        with pytest.raises(ControlStoreError, match=r"revision 0001, this Shiftover needs .*shiftover control upgrade"):
            open_store(url, create=create)
    out = CliRunner().invoke(app, ["control", "upgrade", "--control-url", url])
    assert out.exit_code == 0 and f"0001 -> {head_revision()}" in out.output
    store = open_store(url, create=False)
    assert store.phase("m") == "planned" and store.revision() == head_revision()  # data kept


def test_an_application_never_creates_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    assert open_store(url, create=False).revision() is None  # left empty: the application keeps old-only
    assert open_store(url).revision() == head_revision()  # the orchestrator's first run creates it


def test_the_stored_spec_keeps_references_never_their_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from shiftover.control import schema
    from shiftover.spec import parse_spec, stored_form

    monkeypatch.setenv("SO_TEST_OLD_URL", "postgresql://app:s3cret-old@db1/shop")
    monkeypatch.setenv("SO_TEST_NEW_PASSWORD", "s3cret-new")
    spec = parse_spec(
        {
            "name": "m",
            "source": {"url": "${SO_TEST_OLD_URL}", "table": "orders"},
            "target": {"url": "mysql+pymysql://app:${SO_TEST_NEW_PASSWORD}@db2/shop", "table": "orders"},
            "key": "id",
        }
    )
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    store.register(spec.name, stored_form(spec))
    with store.engine.connect() as conn:
        kept = str(conn.execute(sa.select(schema.migrations.c.spec)).scalar())
    assert "s3cret" not in kept
    assert "${SO_TEST_OLD_URL}" in kept and "app:${SO_TEST_NEW_PASSWORD}@db2" in kept


def _first_run(url: str, barrier: Any, results: Any) -> None:
    """A first run's opening of the control store, in its own process, released with the others."""
    barrier.wait()
    try:
        results.put(("ok", open_store(url).revision()))
    except Exception as exc:  # the test reports it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
def test_first_runs_meeting_an_empty_store_at_once_all_open_it(  # type: ignore[no-untyped-def]
    kind: str, database_url, tmp_path: Path
) -> None:
    """Three processes and two threads open one empty control store at the same instant: every one
    gets a store at the newest revision (one of them used to fail on the table another created, and
    threads of one process failed inside Alembic's shared context)."""
    import multiprocessing
    import threading

    url = database_url(kind)
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(5), spawn.Queue()
    processes = [spawn.Process(target=_first_run, args=(url, barrier, results)) for _ in range(3)]
    for p in processes:
        p.start()
    threads = [threading.Thread(target=_first_run, args=(url, barrier, results)) for _ in range(2)]
    for t in threads:
        t.start()
    outcomes = [results.get(timeout=120) for _ in range(5)]
    for p in processes:
        p.join(30)
    for t in threads:
        t.join(30)
    assert outcomes == [("ok", head_revision())] * 5
