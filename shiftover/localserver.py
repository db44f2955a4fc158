"""One long-lived local Prefect server per project, which every CLI run then reuses.

Without a server (no ``PREFECT_API_URL``), each flow run starts a temporary Prefect server of its
own: 6-35 s measured per ``shiftover run`` here, and it dies with the run, taking its UI and its
pending approvals with it. ``shiftover server start`` starts ``prefect server start`` once, in its
own session (it outlives the terminal), records where it listens in ``.shiftover/server.json``,
and later commands find it there. Nothing here imports Prefect: the server is a child process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from shiftover.errors import ShiftoverError

STATE_FILE = Path(".shiftover/server.json")
DEFAULT_PORT = 4200
START_TIMEOUT = 180.0  # a first start runs the server's database migrations: 27-74 s seen here


@dataclass(frozen=True)
class LocalServer:
    url: str  # http://127.0.0.1:4200, the UI; the API is under /api
    pid: int
    log: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect server answers its health check at ``url``."""
    try:
        with urlopen(f"{url}/api/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_running(state_file: Path = STATE_FILE) -> LocalServer | None:
    """The project's server when it is up and answering; a stale state file is removed."""
    try:
        data = json.loads(state_file.read_text())
        server = LocalServer(url=str(data["url"]), pid=int(data["pid"]), log=str(data["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(server.pid) and _is_prefect_server(server.pid) and healthy(server.url):
        return server
    if not (_alive(server.pid) and _is_prefect_server(server.pid)):
        state_file.unlink(missing_ok=True)
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start(
    state_file: Path = STATE_FILE, host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float = START_TIMEOUT
) -> tuple[LocalServer, bool]:
    """Start the project's server, or return the one already running. ``(server, started)``."""
    running = find_running(state_file)
    if running is not None:
        return running, False
    url = f"http://{host}:{port}"
    if not _port_free(host, port):
        if healthy(url):
            raise ShiftoverError(
                f"a Prefect server not started by Shiftover already listens at {url}: use it with "
                f"PREFECT_API_URL={url}/api, or start Shiftover's on another port (--port)"
            )
        raise ShiftoverError(f"port {port} on {host} is taken by another program: choose another with --port")
    state_file.parent.mkdir(parents=True, exist_ok=True)
    log = state_file.with_name("server.log").resolve()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: it outlives this command, stop() ends all of it
        )
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None:
            raise ShiftoverError(f"prefect server exited with code {process.returncode}; its log: {log}")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise ShiftoverError(f"prefect server did not answer at {url} within {timeout:.0f} s; its log: {log}")
        time.sleep(0.3)
    server = LocalServer(url=url, pid=process.pid, log=str(log))
    state_file.write_text(json.dumps({"url": server.url, "pid": server.pid, "log": server.log}))
    return server, True


def stop(state_file: Path = STATE_FILE) -> LocalServer | None:
    """Stop the project's server (its whole process group); ``None`` when none was running.

    Only a process that still is that server is signalled: after a reboot the recorded pid may
    belong to anything, and its process group must not be killed on a stale file's word."""
    try:
        data = json.loads(state_file.read_text())
        server = LocalServer(url=str(data["url"]), pid=int(data["pid"]), log=str(data["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    running = _alive(server.pid) and _is_prefect_server(server.pid)
    if running:
        _terminate(server.pid)
    state_file.unlink(missing_ok=True)
    return server if running else None


def _is_prefect_server(pid: int) -> bool:
    """Whether ``pid`` runs ``prefect server start`` (its command line, where the OS shows it)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # no /proc: never signal a process we cannot name
    return b"prefect" in argv and b"server" in argv and b"start" in argv


def _terminate(pid: int, grace: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our child
        except ChildProcessError:
            waited = 0 if _alive(pid) else pid
        if waited == pid or not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def configured_api_url() -> str | None:
    """The Prefect API this process is told to use: ``PREFECT_API_URL`` in the environment, else
    the active Prefect profile's (read from its file, without importing Prefect)."""
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active")
    value = data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") if isinstance(active, str) else None
    return str(value) if value else None


def use_running_server(state_file: Path = STATE_FILE) -> LocalServer | None:
    """Point this process's Prefect client at the project's server when one runs and no other is
    configured (an API URL in the environment or the active profile wins). Call before Prefect
    is imported."""
    if configured_api_url():
        return None
    server = find_running(state_file)
    if server is not None:
        os.environ["PREFECT_API_URL"] = server.api_url
    return server
