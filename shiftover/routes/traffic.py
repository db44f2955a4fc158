"""The gateway's own record of traffic: HAProxy (or nginx, over syslog) logs every request (backend, server, status,
server response time, method, path) to a unix datagram socket that ``AccessLog`` reads in a
thread. The gates judge real traffic per side from it: error rate and p99 latency of the old and
new upstreams, and the comparator replays the safe GETs it saw.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when read
    backend: str
    server: str  # "old" / "new" ("<NOSRV>" when none answered)
    status: int
    response_ms: int  # -1 when the server never answered
    method: str
    path: str


def parse_line(line: str, at: float) -> Hit | None:
    """HAProxy's raw line, or nginx's behind a syslog header (``<190>Dec  1 09:00:00 shiftover: ``)."""
    line = line.strip()
    if line.startswith("<") and ": " in line:
        line = line.split(": ", 1)[1]
    parts = line.split(" ")
    if len(parts) < 6:
        return None
    try:
        return Hit(at, parts[0], parts[1], int(parts[2]), response_millis(parts[3]), parts[4], parts[5])
    except ValueError:
        return None


def response_millis(token: str) -> int:
    """HAProxy's ``%Tr`` (whole ms, -1: no answer) or nginx's ``$upstream_response_time`` (seconds
    with ms resolution, ``-``: no answer)."""
    if token == "-":
        return -1
    if "." in token:
        return round(float(token) * 1000)
    return int(token)


class AccessLog:
    """A unix datagram socket HAProxy logs to, read by a daemon thread into a bounded buffer."""

    def __init__(self, path: Path, keep: int = 200_000) -> None:
        self.path = path
        self.hits: deque[Hit] = deque(maxlen=keep)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="shiftover-access-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            hit = parse_line(data.decode(errors="replace"), time.monotonic())
            if hit is not None:
                self.hits.append(hit)

    def since(self, at: float, backend: str | None = None) -> list[Hit]:
        return [h for h in list(self.hits) if h.at >= at and (backend is None or h.backend == backend)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SideStats:
    requests: int
    errors: int  # 5xx or no answer
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def side_stats(hits: list[Hit], server: str) -> SideStats:
    mine = [h for h in hits if h.server == server]
    errors = sum(1 for h in mine if h.status >= 500 or h.response_ms < 0)
    times = sorted(h.response_ms for h in mine if h.response_ms >= 0)
    p99 = float(times[min(len(times) - 1, int(0.99 * len(times)))]) if times else None
    return SideStats(len(mine), errors, p99)
