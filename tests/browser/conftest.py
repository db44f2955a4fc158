"""A real Prefect stack for the UI tests: ``prefect server`` on a free port with its own
PREFECT_HOME, the process work pool, deployments from prefect.yaml and a worker; and headless
Debian Chromium driven by Playwright, with every non-local host blocked.

Each test gets its own demo dataset (SQLite, a few thousand orders) and spec file, passed to
the deployment as parameters. Flow processes are stopped (the worker's process group) before
the server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
import sqlalchemy as sa
import yaml
from prefect_stack import free_port, start_process, stop, wait_healthy

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
OUTPUT = REPO / "test-output"
CHROMIUM = "/usr/bin/chromium"
AUTH_STRING = "operator:" + uuid.uuid4().hex  # the Prefect server's shared user:pass for this module
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Every host but this machine is unresolvable, inside the browser. (A Playwright route did this
    # before; in the sync API a route's handler runs only while the test calls into Playwright, so
    # every request the UI made while the test polled the server with time.sleep waited for it:
    # the Run dialog's create-run request stalled 30 s, the Resume form's until the next page call.)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


@dataclass
class Stack:
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    home: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        auth = base64.b64encode(AUTH_STRING.encode()).decode()
        headers = {"content-type": "application/json", "authorization": f"Basic {auth}"}
        request = Request(f"{self.api}{path}", data=data, method=method, headers=headers)
        with urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def prefect(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def deploy(self, name: str, parameters: dict[str, Any]) -> str:
        """Deploy ``name`` from prefect.yaml with these parameters; returns the deployment id."""
        self.prefect("deploy", "--name", name, "--no-prompt", "--params", json.dumps(parameters))
        [deployment] = [d for d in self.call("POST", "/deployments/filter", {}) if d["name"] == name]
        return str(deployment["id"])

    def flow_runs(self, state: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"sort": "START_TIME_DESC"}
        if state:
            body["flow_runs"] = {"state": {"type": {"any_": [state]}}}
        return list(self.call("POST", "/flow_runs/filter", body))

    def wait_for_run(
        self, state: str, timeout: float = 60, flow_name: str | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        flows = {f["id"]: f["name"] for f in self.call("POST", "/flows/filter", {})} if flow_name else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.flow_runs(state):
                if run_id and run["id"] != run_id:
                    continue
                if flow_name and (flows.get(run["flow_id"]) or self._flow_name(run["flow_id"])) != flow_name:
                    continue
                return run
            time.sleep(0.5)
        raise AssertionError(
            f"no {flow_name or ''} run {run_id or ''} in state {state} within {timeout}s\n{self.diagnostics()}"
        )

    def wait_for_new_run(self, deployment_id: str, before: set[str], timeout: float = 90) -> dict[str, Any]:
        """The run a click created: a run of the deployment that was not there before."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.flow_runs():
                if run["deployment_id"] == deployment_id and run["id"] not in before:
                    return run
            time.sleep(0.5)
        raise AssertionError(f"no new run of deployment {deployment_id} within {timeout}s\n{self.diagnostics()}")

    def wait_until_resumed(self, run_id: str, timeout: float = 90) -> str:
        """Wait until the server has taken the answer: the run is no longer paused. Returns its state name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/flow_runs/{run_id}")
            if run["state_type"] != "PAUSED":
                return str(run["state_name"])
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} still paused {timeout}s after the answer\n{self.diagnostics()}")

    def wait_for_final(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """The run once it has ended, whatever the ending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/flow_runs/{run_id}")
            if run["state_type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
                return dict(run)
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} has not ended within {timeout}s\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        """What a failure message needs: every run's state and the worker's last log lines."""
        runs = [(r["name"], r["state_name"]) for r in self.flow_runs()]
        worker = self.home / "worker.log"
        tail = worker.read_text(errors="replace").splitlines()[-40:] if worker.exists() else []
        return f"runs: {runs}\nworker log (last lines):\n" + "\n".join(tail)

    def _flow_name(self, flow_id: str) -> str:
        return str(self.call("GET", f"/flows/{flow_id}")["name"])


@pytest.fixture(scope="module")
def prefect_database() -> Iterator[str]:
    """The Prefect server's own database, on the PostgreSQL server, as production servers run.

    On its default SQLite file, a loaded machine kept the UI's "create run" request spinning for
    30-90 s (the new run's row written but not committed, so invisible to the worker and the test)
    while the worker's polls and the flow's writes queued on the single SQLite writer lock."""
    admin_url = os.environ.get("SHIFTOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        admin.connect().close()
    except Exception as exc:
        message = f"the UI tests' Prefect server needs PostgreSQL at {admin_url}: {exc.__class__.__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: a missing server is a failure)")
        pytest.skip(message)
    name = f"so_prefect_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_database: str) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/install-browser")
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_UI_API_URL": f"{url}/api",
        # Authentication on, as docs/SECURITY.md asks of real set-ups: the server checks every API
        # call; the worker, `prefect deploy` and the flows send the string; the UI asks for it once.
        "PREFECT_SERVER_API_AUTH_STRING": AUTH_STRING,
        "PREFECT_API_AUTH_STRING": AUTH_STRING,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database,
    }
    env.pop("PREFECT_PROFILES_PATH", None)
    server = start_process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log"
    )
    worker = None
    try:
        wait_healthy(url, server, home / "server.log")
        stack = Stack(url, env, home)
        stack.prefect("work-pool", "create", "shiftover", "--type", "process")
        worker = start_process(
            [str(BIN / "prefect"), "worker", "start", "--pool", "shiftover"], env, home / "worker.log"
        )
        yield stack
    finally:
        if worker is not None:
            stop(worker)  # flow processes first: a flow whose server has gone can hang
        stop(server)


@pytest.fixture
def page(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)  # a loaded CI machine renders slowly
        log_in(page, stack)
        yield page
        context.close()
        browser.close()


def log_in(page: Any, stack: Stack) -> None:
    """The UI's login form, as an operator meets it on a server with authentication on; the API
    refuses the same call without the string."""
    try:
        urlopen(Request(f"{stack.api}/flows/filter", data=b"{}", method="POST"), timeout=10)
    except HTTPError as exc:
        assert exc.code == 401, exc
    else:
        raise AssertionError("the Prefect API answered without authentication")
    page.goto(f"{stack.url}/v2/dashboard")
    password = page.get_by_placeholder("admin:pass")
    password.fill(AUTH_STRING)
    page.get_by_role("button", name="Login").click()
    password.wait_for(state="hidden")


@pytest.fixture
def demo_spec(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """``demo_spec(name)``: old/new SQLite orders databases and a spec; returns deployment parameters."""
    from shiftover.connect import get_engine
    from shiftover.demo import create_orders, orders_table

    def make(
        name: str, rows: int = 3_000, keys: dict[str, str] | None = None, retention_days: float | None = None
    ) -> dict[str, str]:
        old_url, new_url = f"sqlite:///{tmp_path}/{name}-old.db", f"sqlite:///{tmp_path}/{name}-new.db"
        create_orders(get_engine(old_url), rows=rows)
        orders_table().create(get_engine(new_url))
        spec = {
            "name": name,
            "source": {"url": old_url, "table": "orders"},
            "target": {"url": new_url, "table": "orders"},
            "key": ["id"],
            "backfill": {"chunk_rows": 1_000, "concurrency": 1},
            "validation": {"segments": 4},
            "canary": {"steps": [100], "soak_seconds": 0, "shadow_reads": False},
            "gates": {
                "validate": ["row_count", "checksum"],
                "canary": ["reconcile_drained"],
                "switch_writes": ["reconcile_drained", "checksum"],
            },
            "approvals": {"approvers": ["alice"], "timeout_seconds": 300, **({"keys": keys} if keys else {})},
            **({"archive": {"retention_days": retention_days}} if retention_days is not None else {}),
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return {"spec_path": str(path), "control_url": f"sqlite:///{tmp_path}/{name}-control.db"}

    return make
