"""Local worker processes of a distributed run (the backfill's copy, the validation diff): start N
OS processes of a worker module, hand each its job on stdin, wait for all while reading their pipes.

A worker's command line holds its module, id and lease time only: the spec and the control store's
URL (password included) reach it on stdin, never in argv, which any local user can read (``ps``).
A worker prints its report as its last stdout line, one JSON object.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


def worker_command(module: str, worker_id: str, ttl: float) -> list[str]:
    return [sys.executable, "-m", module, worker_id, str(ttl)]


def worker_name(prefix: str, index: int) -> str:
    """A local worker process's holder id. The host is part of it: a worker re-claims segments held
    under its own id, so two parents with the same pid on two machines (containers) must not
    name their workers alike."""
    return f"{prefix}-{index}-{socket.gethostname()}-{os.getpid()}"


def start_processes(
    module: str, job: dict[str, Any], names: Sequence[str], ttl: float
) -> list[subprocess.Popen[bytes]]:
    """One ``python -m module NAME TTL`` per name, each given ``job`` as one JSON line on stdin."""
    line = json.dumps(job).encode() + b"\n"
    procs = []
    for name in names:
        proc = subprocess.Popen(
            worker_command(module, name, ttl), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.close()
        proc.stdin = None  # given: communicate() must not flush it again
        procs.append(proc)
    return procs


@dataclass(frozen=True)
class WorkerExit:
    returncode: int
    report: dict[str, Any] | None  # its one JSON line, when the worker ended normally
    stderr: str


def wait_for_workers(
    procs: list[subprocess.Popen[bytes]], *, tick: Callable[[], None] | None = None, every: float = 1.0
) -> list[WorkerExit]:
    """Wait for every worker process, reading all their pipes meanwhile (a worker blocked on a full
    stderr pipe would hold its lease, heartbeat alive, and the others would wait for it forever),
    calling ``tick`` every ``every`` seconds. Any worker still running when this stops early is killed."""
    pool = ThreadPoolExecutor(max_workers=max(len(procs), 1), thread_name_prefix="worker-pipes")
    try:
        outputs = [pool.submit(p.communicate) for p in procs]
        while futures.wait(outputs, timeout=every).not_done:
            if tick is not None:
                tick()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        pool.shutdown()
    exits = []
    for proc, (out, err) in zip(procs, (f.result() for f in outputs), strict=True):
        report = json.loads(out.decode().strip().splitlines()[-1]) if proc.returncode == 0 else None
        exits.append(WorkerExit(proc.returncode, report, err.decode(errors="replace")))
    return exits
