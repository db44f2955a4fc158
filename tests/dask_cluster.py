"""A real ``dask.distributed`` cluster started by a test or a bench: ``dask scheduler`` on a free
port and any number of ``dask worker`` processes, each a separate OS process in its own session,
with logs under a folder of the caller's. Workers run without a nanny (``--no-nanny``), so the
process a test kills is the one running the backfill loop, as a machine dying would (a nanny
would restart it). Stop the workers before the scheduler."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_stack import BIN, free_port, start_process, stop


@dataclass
class DaskCluster:
    address: str
    home: Path
    scheduler: subprocess.Popen[bytes]
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # name -> process

    def start_worker(self, name: str, nthreads: int = 1) -> subprocess.Popen[bytes]:
        log = self.home / f"{name}.log"
        worker = start_process(
            [
                str(BIN / "dask"),
                "worker",
                self.address,
                "--name",
                name,
                "--nthreads",
                str(nthreads),
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--local-directory",
                str(self.home / name),
                "--death-timeout",
                "60",
            ],
            self.env,
            log,
        )
        self.workers[name] = worker
        return worker

    def wait_for_workers(self, timeout: float = 90) -> None:
        """Until the scheduler's log shows every started worker registered (each worker's log says so)."""
        deadline = time.monotonic() + timeout
        pending = dict(self.workers)
        while pending and time.monotonic() < deadline:
            for name, proc in list(pending.items()):
                log = (self.home / f"{name}.log").read_text(errors="replace")
                if proc.poll() is not None:
                    raise AssertionError(f"dask worker {name} exited:\n{log[-2000:]}")
                if "Registered to:" in log:
                    del pending[name]
            time.sleep(0.2)
        if pending:
            raise AssertionError(f"dask workers {sorted(pending)} not registered after {timeout}s:\n{self.logs()}")

    def kill_worker(self, name: str) -> subprocess.Popen[bytes]:
        """SIGKILL the worker process ``name`` (its machine dying) and wait for it."""
        victim = self.workers[name]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        return victim

    def logs(self) -> str:
        parts = []
        for log in sorted(self.home.glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


class Parent:
    """A run's parent in a thread of the test, so the test can kill Dask workers under it."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), daemon=True)  # a test that failed exits
        self.thread.start()

    def _run(self, run: Callable[[], Any]) -> None:
        try:
            self.value = run()
        except BaseException as exc:  # handed to the test's thread by ``result``
            self.error = exc

    def join(self, timeout: float = 240) -> None:
        self.thread.join(timeout=timeout)

    def result(self, cluster: DaskCluster) -> Any:
        """What the parent returned (after ``join``); re-raises what it raised."""
        assert not self.thread.is_alive(), "the parent never returned\n" + cluster.logs()
        if self.error is not None:
            raise self.error
        return self.value


@contextmanager
def dask_cluster(home: Path, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[DaskCluster]:
    """A scheduler on a free port and ``workers`` workers named ``dw0``, ``dw1``...; all stopped after.
    ``env``: added to every process's environment (the ``${NAME}`` references a worker resolves)."""
    environment = {**os.environ, **(env or {})}
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = start_process(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--no-show",
        ],
        environment,
        home / "scheduler.log",
    )
    cluster = DaskCluster(address, home, scheduler, environment)
    try:
        _wait_scheduler(cluster)
        for i in range(workers):
            cluster.start_worker(f"dw{i}")
        cluster.wait_for_workers()
        yield cluster
    finally:
        for worker in cluster.workers.values():
            stop(worker)
        stop(scheduler)


def _wait_scheduler(cluster: DaskCluster, timeout: float = 60) -> None:
    log = cluster.home / "scheduler.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.scheduler.poll() is not None:
            raise AssertionError(f"dask scheduler exited:\n{log.read_text(errors='replace')[-2000:]}")
        if re.search(r"Scheduler at:\s+tcp://", log.read_text(errors="replace")):
            return
        time.sleep(0.2)
    raise AssertionError(f"dask scheduler not up after {timeout}s:\n{log.read_text(errors='replace')[-2000:]}")
