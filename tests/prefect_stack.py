"""A real Prefect stack started by a test: ``prefect server`` on a free port with its own
PREFECT_HOME and a database of its own on the PostgreSQL server, the ``shiftover`` process work
pool, deployments from prefect.yaml and any number of process workers. The same start-up as the
UI tests' (tests/browser/conftest.py), without the browser and authentication; shared by the
tests that need workers on a pool (test folders do not import one another).

Stop the workers (each in its own session: the flow processes they started first) before the
server: a flow whose server has gone can hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
PG_ADMIN = os.environ.get("SHIFTOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    home: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = Request(f"{self.api}{path}", data=data, method=method, headers={"content-type": "application/json"})
        with urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def prefect(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(BIN / "prefect"), *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start_worker(self, name: str, limit: int | None = None) -> subprocess.Popen[bytes]:
        """A process worker; ``limit``: flow runs it runs at once (else one worker may take them all)."""
        extra = ["--limit", str(limit)] if limit else []
        worker = start_process(
            [str(BIN / "prefect"), "worker", "start", "--pool", "shiftover", "--name", name, *extra],
            self.env,
            self.home / f"{name}.log",
        )
        self.workers.append(worker)
        return worker

    def flow_runs(self) -> list[dict[str, Any]]:
        return list(self.call("POST", "/flow_runs/filter", {"sort": "START_TIME_DESC"}))

    def logs(self) -> str:
        """Every worker's last log lines, for a failure message."""
        parts = []
        for log in sorted(self.home.glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process and everything in its session (a worker started with ``cmd &`` ignored
    SIGTERM in the field notes: SIGKILL after 10 s)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass


@contextmanager
def prefect_stack(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A server with the ``shiftover`` process pool; workers are started by the test (``start_worker``)."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"so_prefect_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    database = sa.make_url(PG_ADMIN).set(drivername="postgresql+asyncpg", database=name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PREFECT_API_DATABASE_CONNECTION_URL": database.render_as_string(hide_password=False),
        **(extra_env or {}),
    }
    env.pop("PREFECT_PROFILES_PATH", None)
    stack = Stack(url, env, home)
    home.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        server = start_process(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            home / "server.out",
        )
        wait_healthy(url, server, home / "server.out")
        stack.prefect("work-pool", "create", "shiftover", "--type", "process")
        yield stack
    finally:
        for worker in stack.workers:
            stop(worker)
        if server is not None:
            stop(server)
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited:\n{log.read_text()[-2000:]}")
        try:
            with urlopen(f"{url}/api/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-2000:]}")
