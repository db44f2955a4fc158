"""What a segment's work tells its lease's heartbeat, so that a worker alive but stuck loses its
segment (``segment_leases.Heartbeat``): when the work last moved, that it waits on purpose, and
how to cancel its running statements once it is declared stalled."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.engines import dialect_for

log = logging.getLogger(__name__)


class WorkProgress:
    """What a segment's work tells its heartbeat: when it last moved (``advance``), that it waits on
    purpose (``holding``: a paused throttle is not a stall), and how to abort its statements once
    it is declared stalled (``on_stall``). ``clock`` is the seam tests replace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.stalled = False
        self._holds = 0
        self._cancels: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def advance(self) -> None:
        self.last = self.clock()

    @contextmanager
    def holding(self) -> Iterator[None]:
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
            self.advance()

    def idle_seconds(self) -> float:
        """Seconds since the work last moved; 0 while it holds on purpose."""
        return 0.0 if self._holds else self.clock() - self.last

    @contextmanager
    def on_stall(self, cancel: Callable[[], None]) -> Iterator[None]:
        """Within the block, ``cancel()`` aborts the work's statement if it is declared stalled."""
        with self._lock:
            self._cancels.append(cancel)
        try:
            yield
        finally:
            with self._lock:
                self._cancels.remove(cancel)

    def declare_stalled(self) -> None:
        """Mark the work stalled and cancel its registered statements (from the heartbeat's thread)."""
        with self._lock:
            self.stalled = True
            cancels = list(self._cancels)
        for cancel in cancels:
            try:
                cancel()
            except Exception as exc:  # the lease is cut anyway: the fence stops the work if it returns
                log.warning("could not cancel a stalled segment's statement: %r", exc)


@contextmanager
def pooled_statements(*engines: Engine) -> Iterator[Callable[[], None]]:
    """A cancel of every statement running on connections checked out of ``engines`` now, for work
    whose queries take pooled connections it never holds itself (the diff's): a worker process
    works on one segment at a time, so what is checked out is that segment's."""
    busy: dict[int, tuple[Engine, Any]] = {}
    lock = threading.Lock()

    def cancel() -> None:
        with lock:
            running = list(busy.values())
        for engine, driver_conn in running:
            dialect_for(engine).cancel_statement(engine, driver_conn)

    listeners: list[tuple[Engine, str, Callable[..., None]]] = []
    for engine in dict.fromkeys(engines):  # one listener per engine, given twice or not

        def out(driver_conn: Any, record: Any, proxy: Any, engine: Engine = engine) -> None:
            with lock:
                busy[id(record)] = (engine, driver_conn)

        def back(driver_conn: Any, record: Any) -> None:
            with lock:
                busy.pop(id(record), None)

        sa.event.listen(engine, "checkout", out)
        sa.event.listen(engine, "checkin", back)
        listeners += [(engine, "checkout", out), (engine, "checkin", back)]
    try:
        yield cancel
    finally:
        for engine, name, fn in listeners:
            sa.event.remove(engine, name, fn)
