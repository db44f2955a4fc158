"""The application's flag client: reads served from memory, refreshed in the background.

A request never waits on the control store: ``get`` and ``routing`` read an immutable
snapshot that a daemon thread replaces every ``ttl`` seconds, so a flip reaches every
instance within about one TTL. When the store cannot be reached the client keeps serving
the last values it saw, logs the outage once, and reports it in ``status()``; a process
that has never reached the store serves the safe default (old store only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from sqlalchemy.engine import Engine

from shiftover.errors import describe_error
from shiftover.flags.bucketing import in_rollout
from shiftover.flags.routing import Routing
from shiftover.flags.store import Flag, read_flags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientStatus:
    reachable: bool  # the last refresh succeeded
    ever_reached: bool  # False: serving safe defaults
    last_refresh: float | None  # time.time() of the last successful refresh
    last_error: str | None
    flags: int
    refreshes: int
    failures: int


@dataclass
class _Snapshot:
    flags: Mapping[str, Flag]
    routings: dict[str, Routing] = field(default_factory=dict)  # filled lazily per migration


class FlagClient:
    """Cached flags for one process. Thread-safe; construct once and share.

    ``store_engine`` may be None (no control store configured): every answer is the default.
    ``start=False`` skips the background thread (tests call ``refresh()`` themselves).
    """

    def __init__(self, store_engine: Engine | None, prefix: str = "", ttl: float = 1.0, *, start: bool = True) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        self.engine = store_engine
        self.prefix = prefix
        self.ttl = ttl
        self._snapshot = _Snapshot({})
        self._stop = threading.Event()
        self._reachable = False
        self._ever = False
        self._last_refresh: float | None = None
        self._last_error: str | None = None
        self._refreshes = 0
        self._failures = 0
        self._local_kill = False
        self.refresh()
        self._thread: threading.Thread | None = None
        if start and store_engine is not None:
            self._thread = threading.Thread(target=self._run, name="shiftover-flags", daemon=True)
            self._thread.start()

    # -- reads (hot path: no I/O, no locks) ---------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        flag = self._snapshot.flags.get(key)
        return default if flag is None else flag.value

    def routing(self, migration: str) -> Routing:
        """The migration's routing from the cached flags (old-only when unknown or killed)."""
        snap = self._snapshot
        routing = snap.routings.get(migration)
        if routing is None:
            routing = Routing.from_flags(migration, snap.flags)
            snap.routings[migration] = routing
        return routing.kill() if self._local_kill else routing

    def is_enabled_for(self, key: str, bucket_key: Any, percent: float | None = None) -> bool:
        """Percentage rollout of flag ``key`` for ``bucket_key``; the percentage is the flag's value
        unless given. Monotone: raising the percentage never turns a key off."""
        if percent is None:
            value = self.get(key, 0.0)
            percent = float(value) if not isinstance(value, bool) else (100.0 if value else 0.0)
        return in_rollout(key, bucket_key, percent)

    def reads_new(self, migration: str, bucket_key: Any, attributes: Mapping[str, Any] | None = None) -> bool:
        return self.routing(migration).reads_new(bucket_key, attributes)

    # -- kill switch --------------------------------------------------------------
    def kill(self, on: bool = True) -> None:
        """This process's own kill switch: safe routing at once, without the control store."""
        self._local_kill = on

    # -- refresh ------------------------------------------------------------------
    def refresh(self) -> bool:
        """Reload flags now; on failure keep the last known values. True when it succeeded."""
        if self.engine is None:
            return False
        try:
            flags = read_flags(self.engine, self.prefix)
        except Exception as exc:
            self._record_failure(exc)
            return False
        if flags != self._snapshot.flags:
            self._snapshot = _Snapshot(flags)
        if not self._reachable and self._ever:
            log.warning("flag store reachable again; %d flags loaded", len(flags))
        self._reachable = self._ever = True
        self._last_refresh = time.time()
        self._last_error = None
        self._refreshes += 1
        return True

    def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        message = describe_error(exc)
        if self._reachable or self._last_error is None:
            state = "last known values" if self._ever else "safe defaults (old store only)"
            log.warning("flag store unreachable (%s); serving %s", message, state)
        self._reachable = False
        self._last_error = message

    def status(self) -> ClientStatus:
        return ClientStatus(
            reachable=self._reachable,
            ever_reached=self._ever,
            last_refresh=self._last_refresh,
            last_error=self._last_error,
            flags=len(self._snapshot.flags),
            refreshes=self._refreshes,
            failures=self._failures,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.ttl):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
