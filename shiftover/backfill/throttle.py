"""How fast the backfill may go, decided while it runs.

Settings come from the spec and are overridden at run time by the flag
``<migration>:backfill.throttle`` (``{"paused": bool, "max_rows_per_second": float,
"chunk_rows": int, "nice_ratio": float}``), which the CLI writes with ``set_throttle``, and then
by an optional ``overrides`` callable (the flow passes one that reads a Prefect variable, so the
UI can do the same): pause, resume and retune take effect within ``refresh_seconds`` without a
restart. While paused, or while the lag probe reads over its threshold, no chunk starts, so nothing
is written. After each chunk the loop rests ``nice_ratio`` times the chunk's time, if set.

Whether the copy loop is holding, and why, is observable: ``Throttle.holding`` is an event set
while it holds (``held_for`` says "paused" or "lagging"), and each change is audited in the
control store (``backfill_held`` / ``backfill_resumed``), so an operator or a test can wait for
the hold instead of sleeping and guessing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shiftover.backfill.budget import Grant, draw, shared_lag
from shiftover.control.store import ControlStore
from shiftover.flags.store import get_flag, set_flag
from shiftover.spec import MAX_NICE_RATIO, BackfillSpec

MIN_CHUNK_ROWS = 500
MAX_CHUNK_ROWS = 1_000_000


def throttle_flag_key(migration: str) -> str:
    return f"{migration}:backfill.throttle"


def set_throttle(
    store_engine: Engine,
    migration: str,
    *,
    paused: bool | None = None,
    max_rows_per_second: float | None = None,
    chunk_rows: int | None = None,
    nice_ratio: float | None = None,
    actor: str = "cli",
) -> dict[str, Any]:
    """Pause, resume or retune a running backfill. ``max_rows_per_second=0`` removes the cap,
    ``nice_ratio=0`` the rest after each chunk."""
    if max_rows_per_second is not None and max_rows_per_second < 0:
        raise ValueError("max_rows_per_second must be >= 0 (0 removes the cap)")
    if nice_ratio is not None and not 0 <= nice_ratio <= MAX_NICE_RATIO:
        raise ValueError(f"nice_ratio must be between 0 and {MAX_NICE_RATIO} (0 removes the rest)")
    if chunk_rows is not None and not MIN_CHUNK_ROWS <= chunk_rows <= MAX_CHUNK_ROWS:
        raise ValueError(f"chunk_rows must be between {MIN_CHUNK_ROWS} and {MAX_CHUNK_ROWS}")
    key = throttle_flag_key(migration)
    current = get_flag(store_engine, key)
    value = dict(current.value) if current else {}
    changes = {
        "paused": paused,
        "max_rows_per_second": max_rows_per_second,
        "chunk_rows": chunk_rows,
        "nice_ratio": nice_ratio,
    }
    for name, new in changes.items():
        if new is not None:
            value[name] = new
    set_flag(
        store_engine,
        key,
        value,
        actor,
        migration=migration,
        expected_version=current.version if current else 0,
        reason="backfill throttle",
    )
    return value


@dataclass(frozen=True)
class ThrottleSettings:
    paused: bool
    max_rows_per_second: float | None
    chunk_rows: int | None  # set at run time; None: the size steered by ``record``
    nice_ratio: float | None = None  # rest after each chunk, times the chunk's time


class Throttle:
    """Shared by every segment of one run: a global rows/s cap, chunk sizing, pause and lag probe.

    ``clock`` and ``sleep`` are the seams tests replace. ``holding`` is set while the copy loop
    holds (paused or lagging) and cleared when it may copy again.
    """

    def __init__(
        self,
        spec: BackfillSpec,
        *,
        store_engine: Engine | None = None,
        migration: str = "",
        lag_engine: Engine | None = None,
        overrides: Callable[[], dict[str, Any] | None] | None = None,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        shared: bool = False,
    ) -> None:
        self.spec = spec
        self.store_engine = store_engine
        self.migration = migration
        self.lag_engine = lag_engine
        self.overrides = overrides
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.sleep = sleep
        # a distributed worker: the cap is the cluster's, drawn from the control store's budget
        # row (``backfill.budget``) instead of this process's own schedule
        self.shared = shared and store_engine is not None and bool(migration)
        # this process's last draws from the shared budget, in order (bounded: a worker runs for hours)
        self.grants: deque[Grant] = deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._tuned_chunk = spec.chunk_rows
        self._settings = ThrottleSettings(False, spec.max_rows_per_second, None, spec.nice_ratio)
        self._read_at = -1e18
        self._hold_lock = threading.Lock()
        self.holding = threading.Event()
        self.held_for: str | None = None  # "paused" | "lagging" while holding

    # -- run-time settings -----------------------------------------------------------
    def settings(self) -> ThrottleSettings:
        """Spec settings overridden by the throttle flag (re-read at most every ``refresh_seconds``)."""
        now = self.clock()
        if (self.store_engine is None and self.overrides is None) or now - self._read_at < self.refresh_seconds:
            return self._settings
        flag = get_flag(self.store_engine, throttle_flag_key(self.migration)) if self.store_engine else None
        value = dict(flag.value) if flag else {}
        value.update((self.overrides() if self.overrides else None) or {})
        cap = value.get("max_rows_per_second", self.spec.max_rows_per_second)
        chunk = value.get("chunk_rows")
        nice = value.get("nice_ratio", self.spec.nice_ratio)
        self._settings = ThrottleSettings(
            paused=bool(value.get("paused", False)),
            max_rows_per_second=float(cap) if cap else None,
            chunk_rows=int(chunk) if chunk else None,
            nice_ratio=float(nice) if nice else None,
        )
        self._read_at = now
        return self._settings

    def chunk_rows(self) -> int:
        return self.settings().chunk_rows or self._tuned_chunk

    # -- gates before a chunk ----------------------------------------------------------
    def wait_until_allowed(self, expired: Callable[[], bool] | None = None) -> bool:
        """Block while paused or lagging; False when ``expired()`` turned true while waiting."""
        while True:
            if expired is not None and expired():
                return False
            reason = "paused" if self.settings().paused else "lagging" if self.lagging() else None
            self._note_hold(reason)
            if reason is None:
                return True
            self.sleep(min(self.refresh_seconds, 1.0))

    def _note_hold(self, reason: str | None) -> None:
        """Publish a change of hold state: an audit entry in the store, then the ``holding`` event."""
        with self._hold_lock:  # one entry per change, in order, however many segments see it
            if reason == self.held_for:
                return
            if self.store_engine is not None and self.migration:
                action, detail = ("backfill_resumed", {}) if reason is None else ("backfill_held", {"reason": reason})
                ControlStore(self.store_engine).audit(self.migration, "backfill", action, detail)
            self.held_for = reason
            if reason is None:
                self.holding.clear()
            else:
                self.holding.set()

    def lagging(self) -> bool:
        """The spec's lag query over its threshold: probed here, or with ``shared`` read from the
        cluster's one probe (``budget.shared_lag``: one worker runs the query per refresh interval)."""
        if self.lag_engine is None or self.spec.lag_query is None or self.spec.lag_threshold is None:
            return False
        if self.shared and self.store_engine is not None:
            value = shared_lag(self.store_engine, self.migration, self.probe_lag, self.refresh_seconds)
        else:
            value = self.probe_lag()
        return value is not None and value > self.spec.lag_threshold

    def probe_lag(self) -> float | None:
        """One run of the spec's lag query on the lagging server."""
        assert self.lag_engine is not None and self.spec.lag_query is not None
        with self.lag_engine.connect() as conn:
            value = conn.execute(sa.text(self.spec.lag_query)).scalar()
        return None if value is None else float(value)

    def acquire(self, rows: int) -> None:
        """Reserve ``rows`` under the global rows/s cap, sleeping until their slot comes: this
        process's cap, or with ``shared`` the cluster's, drawn from the control store."""
        cap = self.settings().max_rows_per_second
        if not cap or rows <= 0:
            return
        if self.shared:
            assert self.store_engine is not None
            asked = self.clock()
            grant = draw(self.store_engine, self.migration, rows, cap)
            with self._lock:
                self.grants.append(grant)
            wait = grant.wait_seconds - (self.clock() - asked)  # the round trip counts as waited
            if wait > 0:
                self.sleep(wait)
            return
        with self._lock:
            now = self.clock()
            start = max(now, self._next_slot)
            self._next_slot = start + rows / cap
        if start > now:
            self.sleep(start - now)

    # -- after a chunk -------------------------------------------------------------------
    def record(self, rows: int, seconds: float) -> None:
        """Steer the chunk size toward ``target_chunk_seconds`` (halving/doubling at most)."""
        target = self.spec.target_chunk_seconds
        if not target or rows <= 0 or seconds <= 0:
            return
        ideal = rows * target / seconds
        with self._lock:
            bounded = min(max(ideal, self._tuned_chunk / 2), self._tuned_chunk * 2)
            self._tuned_chunk = int(min(max(bounded, MIN_CHUNK_ROWS), MAX_CHUNK_ROWS))

    def rest_after(self, seconds: float) -> None:
        """Rest ``nice_ratio`` times the chunk's ``seconds`` (gh-ost's nice ratio): the server's other
        clients get that share of the time without the backfill's writes. A rows/s cap bounds the
        average; this bounds the share of time the backfill writes, however fast each chunk runs."""
        nice = self.settings().nice_ratio
        if nice and seconds > 0:
            self.sleep(nice * seconds)
