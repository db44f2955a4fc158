"""Shared fixtures: real databases (a fresh one per test), the control store, Prefect's harness.

PostgreSQL and MariaDB are the servers this machine starts (127.0.0.1:5432 user postgres,
127.0.0.1:3306 user root). Without them those tests skip with the reason, except under
CI=true, where a missing server fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import uuid

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shiftover.connect import dispose_engines
from shiftover.control.store import ControlStore, open_store
from shiftover.mapping import forget_reflections

PG_ADMIN_URL = os.environ.get("SHIFTOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("SHIFTOVER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/mysql")
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--browser", action="store_true", help="run the Prefect UI tests in headless Chromium")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--browser"):
        return
    skip = pytest.mark.skip(reason="browser test: opt in with --browser (.ci/run does)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def _server_or_skip(admin_url: str, name: str) -> sa.Engine:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        message = f"{name} server not reachable at {engine.url.render_as_string()}: {exc.__class__.__name__}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing server is a failure)")
        pytest.skip(message)
    return engine


def _fresh_database(admin_url: str, name: str) -> Iterator[Callable[..., str]]:
    """A factory of new empty databases on a server, all dropped at the end of the test."""
    admin = _server_or_skip(admin_url, name)
    created: list[str] = []

    def make(options: str = "") -> str:
        """``options``: trusted SQL after CREATE DATABASE name (an encoding, say)."""
        db = f"so_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {db} {options}"))
        created.append(db)
        return sa.make_url(admin_url).set(database=db).render_as_string(hide_password=False)

    yield make
    dispose_engines()
    forget_reflections()
    with admin.connect() as conn:
        for db in created:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
    admin.dispose()


@pytest.fixture
def pg_database() -> Iterator[Callable[..., str]]:
    """Call it to get the URL of a new, empty PostgreSQL database."""
    yield from _fresh_database(PG_ADMIN_URL, "PostgreSQL")


@pytest.fixture
def mariadb_database() -> Iterator[Callable[..., str]]:
    """Call it to get the URL of a new, empty MariaDB database."""
    yield from _fresh_database(MARIADB_ADMIN_URL, "MariaDB")


@pytest.fixture
def sqlite_database(tmp_path) -> Callable[[], str]:  # type: ignore[no-untyped-def]
    """Call it to get the URL of a new SQLite file."""
    counter = iter(range(10_000))

    def make() -> str:
        return f"sqlite:///{tmp_path}/db{next(counter)}.db"

    return make


@pytest.fixture
def control_store(tmp_path) -> Iterator[ControlStore]:  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    yield store
    dispose_engines()
    forget_reflections()


@pytest.fixture
def dask_home(tmp_path: Path) -> Path:
    """Where a test's Dask cluster keeps its logs; skips (fails under CI=true) when the dask extra is missing."""
    if importlib.util.find_spec("distributed") is None:
        message = "the distributed package is not installed (pip install -e '.[dask]'; the dev extra has it)"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing tool is a failure)")
        pytest.skip(message)
    return tmp_path / "dask"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the session, heartbeats off (each costs ~1 s per flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A shared 2-core machine under load took over 60 s to start it once (every flow test then erred).
    with prefect_test_harness(server_startup_timeout=180):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sqlite_database: Callable[[], str]) -> Callable[[str], str]:
    """``database_url("postgres" | "mariadb" | "sqlite")``: the URL of a new, empty database of that kind."""
    fixtures = {"postgres": "pg_database", "mariadb": "mariadb_database"}

    def make(kind: str) -> str:
        if kind == "sqlite":
            return sqlite_database()
        factory: Callable[[], str] = request.getfixturevalue(fixtures[kind])
        return factory()

    return make
