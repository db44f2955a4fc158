"""A simulated application: one thread writing (insert, update, delete) and reading orders
through the dual-writer at a steady rate, as a live service would during a migration."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from shiftover.demo.orders import STATUSES, order_row
from shiftover.dualwrite import DualWriter


@dataclass
class AppStats:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    reads: int = 0
    failed_requests: int = 0  # a write or read the application saw fail
    errors: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return self.inserts + self.updates + self.deletes


class SimulatedApp:
    """Writes through ``writer`` at about ``writes_per_second`` until ``stop()``."""

    def __init__(self, writer: DualWriter, first_free_id: int, writes_per_second: float, seed: int = 11) -> None:
        self.writer = writer
        self.stats = AppStats()
        self._rng = random.Random(seed)
        self._next_id = first_free_id
        self._interval = 1.0 / writes_per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-app", daemon=True)

    def start(self) -> SimulatedApp:
        self._thread.start()
        return self

    def stop(self) -> AppStats:
        self._stop.set()
        self._thread.join(timeout=30)
        self.writer.flush()
        return self.stats

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._one_request()
            except Exception as exc:
                self.stats.failed_requests += 1
                self.stats.errors.append(repr(exc)[:200])
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def _one_request(self) -> None:
        roll = self._rng.random()
        existing = (self._rng.randrange(1, self._next_id),)
        if roll < 0.3:
            now = datetime.now().replace(microsecond=0)
            self.writer.insert({**order_row(self._next_id, self._rng), "created_at": now, "updated_at": now})
            self._next_id += 1
            self.stats.inserts += 1
        elif roll < 0.75:
            self.writer.update(
                existing,
                {
                    "status": self._rng.choice(STATUSES),
                    "amount": Decimal(self._rng.randrange(100, 10**6)) / 100,
                    "updated_at": datetime.now().replace(microsecond=0),
                },
            )
            self.stats.updates += 1
        elif roll < 0.85:
            self.writer.delete(existing)
            self.stats.deletes += 1
        else:
            self.writer.read(existing)
            self.stats.reads += 1
