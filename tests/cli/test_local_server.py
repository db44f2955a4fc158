"""`shiftover server`: one long-lived Prefect server per project, which later runs reuse instead of
starting a temporary server each (6-35 s per run measured before; bench/operator_wait.py times both)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import Request, urlopen

from shiftover.connect import get_engine
from shiftover.control.store import open_store
from shiftover.demo import create_orders
from shiftover.localserver import find_running, healthy, start, stop
from shiftover.phases import Phase

SHIFTOVER = Path(sys.executable).parent / "shiftover"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flow_runs(api_url: str) -> list[dict[str, object]]:
    request = Request(
        f"{api_url}/flow_runs/filter", data=b"{}", method="POST", headers={"content-type": "application/json"}
    )
    with urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()))


def test_a_run_uses_the_projects_server_and_stop_ends_it(tmp_path: Path) -> None:
    create_orders(get_engine(f"sqlite:///{tmp_path}/old.db"), rows=50)
    (tmp_path / "spec.yaml").write_text(
        "name: m\nsource: {url: 'sqlite:///old.db', table: orders}\n"
        "target: {url: 'sqlite:///new.db', table: orders}\nkey: id\nbackfill: {create_target: true}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    state = tmp_path / ".shiftover" / "server.json"

    started = subprocess.run(
        [str(SHIFTOVER), "server", "start", "--port", str(_free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    server = find_running(state)
    try:
        assert started.returncode == 0, started.stderr
        assert server is not None and healthy(server.url), started.stdout
        again = subprocess.run(
            [str(SHIFTOVER), "server", "start"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0 and f"already running: {server.url}" in again.stdout

        began = time.monotonic()
        run = subprocess.run(
            [str(SHIFTOVER), "run", "spec.yaml", "--stop-after", "dual_write"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        seconds = time.monotonic() - began
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"Prefect server: {server.url} (shiftover server)" in run.stderr
        assert open_store(f"sqlite:///{tmp_path}/.shiftover/control.db").phase("m") is Phase.DUAL_WRITING
        assert "COMPLETED" in {r["state_type"] for r in _flow_runs(server.api_url)}  # the run is on that server
        print(f"shiftover run against the project's server: {seconds:.1f} s (process start to exit)")
    finally:
        stopped = subprocess.run(
            [str(SHIFTOVER), "server", "stop"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    assert server is not None and stopped.stdout.strip() == f"stopped: {server.url}"
    assert not healthy(server.url) and not state.exists()
    status = subprocess.run([str(SHIFTOVER), "server", "status"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "not running" in status.stdout


def test_a_stale_state_file_is_not_a_server(tmp_path: Path) -> None:
    state = tmp_path / "server.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid, "log": "x"}))
    assert find_running(state) is None
    assert not state.exists()  # removed, so the next start begins clean
    assert stop(state) is None


def test_a_stale_state_file_naming_another_live_process_never_signals_it(tmp_path: Path) -> None:
    """After a reboot the recorded pid can belong to anything: stop must not kill its process group."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state = tmp_path / "server.json"
        state.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": other.pid, "log": "x"}))
        assert find_running(state) is None
        state.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": other.pid, "log": "x"}))
        assert stop(state) is None and not state.exists()
        time.sleep(0.5)
        assert other.poll() is None  # still running: never signalled
    finally:
        other.kill()
        other.wait()


def test_start_refuses_a_port_another_program_holds(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            start(tmp_path / "server.json", port=port, timeout=5)
        except Exception as exc:
            assert f"port {port} on 127.0.0.1 is taken by another program" in str(exc)
        else:
            raise AssertionError("start on a taken port did not refuse")
    assert not (tmp_path / "server.json").exists()
