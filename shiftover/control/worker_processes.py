"""Local worker processes of a distributed run (the backfill's copy, the validation diff): start N
OS processes of a worker module, hand each its job on stdin, wait for all while reading their pipes.

A worker's command line holds its module, id and lease time only: the spec and the control store's
URL (password included) reach it on stdin, never in argv, which any local user can read (``ps``).
A worker prints its report as its last stdout line, one JSON object.

The parent never waits forever for a worker stuck where nothing can reach it (stopped, or in a
database call whose cancel never arrives): ``StallWatch`` reads the round's segment leases and
names the workers whose leases lapsed without renewal, and ``wait_for_workers`` ends them (SIGTERM,
then SIGKILL after a grace). Their segments are free again once their leases expire, as for a
worker that died.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from shiftover.control.store import utcnow

log = logging.getLogger(__name__)


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
    stalled: str | None = None  # why the parent ended it as stalled; None when it ended by itself


def wait_for_workers(
    procs: list[subprocess.Popen[bytes]],
    *,
    tick: Callable[[], None] | None = None,
    every: float = 1.0,
    stalled: Callable[[], Mapping[int, str]] | None = None,
    grace: float = 5.0,
) -> list[WorkerExit]:
    """Wait for every worker process, reading all their pipes meanwhile (a worker blocked on a full
    stderr pipe would hold its lease, heartbeat alive, and the others would wait for it forever),
    calling ``tick`` every ``every`` seconds. ``stalled`` (a ``StallWatch``), called as often, names
    the workers to end and why, by index: each gets SIGTERM, then SIGKILL ``grace`` seconds later (a
    stopped process keeps SIGTERM pending). Any worker still running when this stops early is killed."""
    pool = ThreadPoolExecutor(max_workers=max(len(procs), 1), thread_name_prefix="worker-pipes")
    ending: dict[int, tuple[str, float]] = {}  # worker -> why, and when SIGKILL follows
    try:
        outputs = [pool.submit(p.communicate) for p in procs]
        while futures.wait(outputs, timeout=every).not_done:
            if tick is not None:
                tick()
            if stalled is not None:
                end_stalled(procs, stalled(), ending, grace)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        pool.shutdown()
    exits = []
    for i, (proc, (out, err)) in enumerate(zip(procs, (f.result() for f in outputs), strict=True)):
        report = json.loads(out.decode().strip().splitlines()[-1]) if proc.returncode == 0 else None
        why = ending[i][0] if i in ending else None
        exits.append(WorkerExit(proc.returncode, report, err.decode(errors="replace"), why))
    return exits


def end_stalled(
    procs: Sequence[subprocess.Popen[bytes]],
    named: Mapping[int, str],
    ending: dict[int, tuple[str, float]],
    grace: float,
) -> None:
    """SIGTERM to each newly ``named`` worker still running; SIGKILL to those past their grace."""
    now = time.monotonic()
    for i, why in named.items():
        if i not in ending and procs[i].poll() is None:
            log.warning(
                "worker process %d stalled: %s; ending it (SIGTERM, SIGKILL after %g s)", procs[i].pid, why, grace
            )
            procs[i].terminate()
            ending[i] = (why, now + grace)
    for i, (_, kill_at) in ending.items():
        if now >= kill_at and procs[i].poll() is None:
            procs[i].kill()


@dataclass(frozen=True)
class SegmentView:
    """One segment of a plan as ``StallWatch`` reads it: finished or not, and its lease."""

    segment: int
    finished: bool
    holder: str | None
    expires_at: datetime | None
    heartbeat_at: datetime | None


class StallWatch:
    """Which worker processes of one round to end as stalled, read from the plan's segment leases
    (``read``), for ``wait_for_workers``. A worker stopped, or stuck in a database call its cancel
    never reaches, renews no lease; the others take its segments over once its leases expire, but
    they may block on its open transaction's locks, and the parent would wait for it forever. Ended:

    - a worker whose lease lapsed (a segment it held expired, or another worker took it over) and
      that has renewed no lease for ``ttl`` seconds since (one whose stalled statement was
      cancelled in time carries on and claims another segment within that);
    - every worker still running ``linger`` seconds after every segment was finished (a live one
      ends at its next poll);
    - every worker, when segments wait and no lease was live or renewed for ``idle`` seconds since
      the round began (all stuck before their first claim): the caller starts another round.

    Times are the workers' clocks (``heartbeat_at``) and this process's, one machine's."""

    def __init__(
        self,
        read: Callable[[], Sequence[SegmentView]],
        names: Sequence[str],
        *,
        ttl: float,
        linger: float | None = None,
        idle: float | None = None,
    ) -> None:
        self.read, self.names, self.ttl = read, list(names), ttl
        self.linger = linger if linger is not None else max(2 * ttl, 10.0)
        self.idle = idle if idle is not None else max(4 * ttl, 60.0)
        self.active = utcnow()  # the newest sign of any worker's work: a heartbeat, or the round's start
        self.finished_at: datetime | None = None
        self.held: dict[int, str] = {}  # unfinished segment -> its holder when last read
        self.lapsed: dict[str, tuple[datetime, int]] = {}  # worker -> when its lease lapsed, and on what

    def __call__(self) -> dict[int, str]:
        try:
            rows = self.read()
        except sa.exc.SQLAlchemyError as error:  # the control store unreachable: judge nobody now
            log.warning("stall watch: cannot read the segment leases: %s", error)
            return {}
        now = utcnow()
        unfinished = [r for r in rows if not r.finished]
        renewed = self._read_leases(unfinished, now)
        for name, (since, _) in list(self.lapsed.items()):
            if name in renewed and renewed[name] > since:
                del self.lapsed[name]  # it claimed or renewed a lease since: alive
        ended = {}
        for i, name in enumerate(self.names):
            if name in self.lapsed:
                since, segment = self.lapsed[name]
                waited = (now - since).total_seconds()
                if waited >= self.ttl:
                    ended[i] = (
                        f"its lease on segment {segment} lapsed (not renewed within the lease TTL, {self.ttl:g} s) "
                        f"and it renewed none in the {waited:.0f} s since"
                    )
        if not unfinished:
            self.finished_at = self.finished_at or now
            waited = (now - self.finished_at).total_seconds()
            if waited >= self.linger:
                why = f"still running {waited:.0f} s after every segment was finished"
                ended.update({i: why for i in range(len(self.names)) if i not in ended})
            return ended
        self.finished_at = None
        quiet = (now - self.active).total_seconds()
        if not renewed and quiet >= self.idle:
            why = f"no worker held a live lease for {quiet:.0f} s while {len(unfinished)} segment(s) waited"
            ended.update({i: why for i in range(len(self.names)) if i not in ended})
        return ended

    def _read_leases(self, unfinished: Sequence[SegmentView], now: datetime) -> dict[str, datetime]:
        """Note lapsed leases of this round's workers; the newest heartbeat of each worker holding a
        live lease."""
        renewed: dict[str, datetime] = {}
        seen = {}
        for r in unfinished:
            beat, expires = _utc(r.heartbeat_at), _utc(r.expires_at)
            if beat is not None and beat > self.active:
                self.active = beat
            before = self.held.get(r.segment)
            if before is not None and before != r.holder and before in self.names:
                self.lapsed.setdefault(before, (now, r.segment))  # taken over: its lease had expired
            if r.holder is None:
                continue
            seen[r.segment] = r.holder
            if expires is not None and expires > now:
                renewed[r.holder] = max(renewed.get(r.holder, beat or now), beat or now)
            elif r.holder in self.names:
                self.lapsed.setdefault(r.holder, (now, r.segment))
        self.held = seen
        return renewed


def _utc(at: datetime | None) -> datetime | None:
    """A control store's timestamp as aware UTC (MariaDB's DATETIME comes back naive, in UTC)."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
