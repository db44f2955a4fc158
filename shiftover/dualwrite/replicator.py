"""The secondary write: make the other store equal for a key, inline or on worker threads.

Every failure ends in the durable reconciliation queue; if even the control store is down,
keys wait in memory (``backlog``) and are enqueued by the next ``retry_backlog``. In the
asynchronous mode each key always lands on the same worker (hash of the key), so writes
to one key are replicated in order; a worker takes up to ``batch`` keys at a time and
reads their current image from the source of truth, so coalesced updates still converge.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

from shiftover import metrics, reconcile
from shiftover.dualwrite.image import apply_image
from shiftover.errors import describe_error
from shiftover.mapping import TableMapping
from shiftover.metrics import Recorder
from shiftover.rowsync import Key, sync_keys

log = logging.getLogger(__name__)


class Job(NamedTuple):
    """A unit of secondary work: copy ``key`` from ``src`` to ``dst`` through ``mapping``."""

    src: Engine
    dst: Engine
    mapping: TableMapping
    key: Key
    op: str  # the reconciliation op should the copy fail: "upsert" or "delete"


class Replicator:
    """Runs secondary writes and records what failed. ``asynchronous=False`` runs them inline."""

    def __init__(
        self,
        store: Engine,
        migration: str,
        recorder: Recorder,
        *,
        asynchronous: bool,
        queue_size: int = 10_000,
        workers: int = 2,
        batch: int = 100,
        linger: float = 0.005,
        old: Engine | None = None,
    ) -> None:
        self.store = store
        self.old = old  # writes bound for it run new -> old: queued keys keep that direction
        self.migration = migration
        self.recorder = recorder
        self.asynchronous = asynchronous
        self.batch = batch
        self.linger = linger
        self._backlog: list[tuple[Key, str, str, str | None]] = []
        self._backlog_lock = threading.Lock()
        self._stop = threading.Event()
        self._queues: list[queue.Queue[Job]] = []
        self._threads: list[threading.Thread] = []
        if asynchronous:
            per_worker = max(1, queue_size // workers)
            for i in range(workers):
                q: queue.Queue[Job] = queue.Queue(maxsize=per_worker)
                t = threading.Thread(target=self._work, args=(q,), name=f"shiftover-dualwrite-{i}", daemon=True)
                self._queues.append(q)
                self._threads.append(t)
                t.start()

    # -- submitting ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Replicate now (sync) or hand to the key's worker (async); never raises."""
        if not self.asynchronous:
            self.replicate([job])
            return
        q = self._queues[hash(job.key) % len(self._queues)]
        try:
            q.put_nowait(job)
        except queue.Full:
            self.recorder.count(metrics.QUEUE_OVERFLOWS)
            self.park([(job.key, job.op)], "async queue full", self.direction(job.dst))

    def apply(
        self,
        dst: Engine,
        mapping: TableMapping,
        keys: list[Key],
        image: list[dict[str, Any]],
        items: Sequence[tuple[Key, str]],
    ) -> None:
        """Write images read on the primary's connection to the secondary, inline; never raises."""
        self.recorder.count(metrics.SECONDARY_WRITES, len(keys))
        try:
            apply_image(dst, mapping, keys, image)
        except Exception as exc:
            self.recorder.count(metrics.SECONDARY_ERRORS, len(keys))
            self.park(items, describe_error(exc), self.direction(dst))

    def replicate(self, jobs: Sequence[Job]) -> None:
        """Copy the jobs' keys (one route) inline, reading each image from the source after its commit;
        never raises: whatever fails, a computed column included, parks the keys."""
        first = jobs[0]
        keys = [j.key for j in jobs]
        self.recorder.count(metrics.SECONDARY_WRITES, len(keys))
        try:
            sync_keys(first.src, first.dst, first.mapping, keys)
        except Exception as exc:
            self.recorder.count(metrics.SECONDARY_ERRORS, len(keys))
            self.park([(j.key, j.op) for j in jobs], describe_error(exc), self.direction(first.dst))

    # -- durable record -----------------------------------------------------------
    def direction(self, dst: Engine) -> str | None:
        """Which way a failed write to ``dst`` must be reconciled (None: unknown, the mode decides)."""
        if self.old is None:
            return None
        return reconcile.NEW_TO_OLD if dst is self.old else reconcile.OLD_TO_NEW

    def park(self, items: Sequence[tuple[Key, str]], error: str, direction: str | None = None) -> None:
        """Record keys for reconciliation, with the direction of the write that failed; keep them in
        memory if the control store is down too."""
        try:
            reconcile.enqueue(self.store, self.migration, items, error, direction)
            self.recorder.count(metrics.ENQUEUED, len(items))
        except Exception as exc:
            log.error("reconciliation queue unreachable (%s): %d key(s) held in memory", exc, len(items))
            with self._backlog_lock:
                self._backlog.extend((k, op, error, direction) for k, op in items)

    def retry_backlog(self) -> int:
        """Enqueue keys held in memory while the control store was down; returns how many are left."""
        with self._backlog_lock:
            backlog, self._backlog = self._backlog, []
        failed = []
        for direction in dict.fromkeys(d for *_, d in backlog):
            group = [b for b in backlog if b[3] == direction]
            try:
                reconcile.enqueue(
                    self.store, self.migration, [(k, op) for k, op, _, _ in group], group[-1][2], direction
                )
                self.recorder.count(metrics.ENQUEUED, len(group))
            except Exception:
                failed += group
        if failed:
            with self._backlog_lock:
                self._backlog[:0] = failed
        return len(self._backlog)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # -- async workers ------------------------------------------------------------
    def _work(self, q: queue.Queue[Job]) -> None:
        while not self._stop.is_set() or not q.empty():
            try:
                first = q.get(timeout=0.05)
            except queue.Empty:
                continue
            jobs = [first]
            until = time.monotonic() + self.linger  # wait a moment so bursts share one round trip
            while len(jobs) < self.batch:
                left = until - time.monotonic()
                try:
                    jobs.append(q.get(timeout=left) if left > 0 else q.get_nowait())
                except queue.Empty:
                    break
            try:
                for group in _by_route(jobs):
                    self.replicate(group)
            finally:
                for _ in jobs:
                    q.task_done()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submitted secondary write has run (or been queued durably)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for q in self._queues:
            while q.unfinished_tasks:
                if deadline is not None and time.monotonic() > deadline:
                    return
                time.sleep(0.002)

    def close(self) -> None:
        self.flush(timeout=30)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.retry_backlog()


def _by_route(jobs: Sequence[Job]) -> list[list[Job]]:
    """Split a batch where the route (engines, mapping) changes, keeping order within each key."""
    groups: dict[tuple[int, int, int], list[Job]] = {}
    for job in jobs:
        groups.setdefault((id(job.src), id(job.dst), id(job.mapping)), []).append(job)
    return list(groups.values())


def run_later(interval: float, fn: Callable[[], Any], stop: threading.Event) -> threading.Thread:
    """A daemon thread calling ``fn`` every ``interval`` seconds until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                fn()
            except Exception:
                log.exception("periodic dual-writer task failed")

    thread = threading.Thread(target=loop, name="shiftover-dualwrite-ticker", daemon=True)
    thread.start()
    return thread
