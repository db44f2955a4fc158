"""The dark launch's comparator endpoint: a small HTTP server the gateway mirrors a route's live
safe requests to (nginx ``mirror``). It answers each copy at once (204: nginx holds a kept-alive
client connection until its mirror subrequest ends) and queues it; worker threads replay each
queued request to the old upstream twice and the new once (``compare.compare_path``: fields that
differ between the two old answers are noise) until ``limit`` requests were compared. A full queue
drops copies (counted), never slows the gateway.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shiftover.routes.compare import STATUS, Answer, Comparison, DarkLaunchReport, compare_path, fetch
from shiftover.routes.spec import Upstream


@dataclass(frozen=True)
class Mirrored:
    """One mirrored request: its route, method, path (with query) and what identifies its user
    (the key header and cookies), which the replays carry."""

    route: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


class MirrorComparator:
    """Listens on 127.0.0.1 (a free port); ``address`` is what the gateway mirrors to."""

    def __init__(
        self,
        old: Upstream,
        new: Upstream,
        key_header: str,
        *,
        limit: int,
        ignore: frozenset[str] = frozenset(),
        workers: int = 2,
        queue_size: int = 1000,
    ) -> None:
        self.old, self.new, self.key_header, self.limit, self.ignore = old, new, key_header, limit, ignore
        self.received = 0
        self.dropped = 0
        self.unanswered = 0  # the old upstream gave no answer: nothing to compare against
        self.comparisons: list[Comparison] = []
        self._queue: queue.Queue[Mirrored] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = _server(self)
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self._threads += [threading.Thread(target=self._replay, daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def offer(self, item: Mirrored) -> None:
        with self._lock:
            self.received += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _replay(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if len(self.comparisons) >= self.limit:
                continue  # enough compared: the rest are drained unreplayed
            headers = dict(item.headers)
            result: Comparison | None
            try:
                result = compare_path(self.old, self.new, item.path, headers, self.ignore)
            except OSError:
                result = self._one_sided(item.path, headers)
            if result is not None:
                with self._lock:
                    if len(self.comparisons) < self.limit:
                        self.comparisons.append(result)

    def _one_sided(self, path: str, headers: dict[str, str]) -> Comparison | None:
        """A replay that failed: when the old upstream answers, the new one's silence is a mismatch."""
        try:
            old = fetch(self.old, path, headers)
        except OSError:
            with self._lock:
                self.unanswered += 1
            return None
        silent = Answer(0, {STATUS: "no answer"})
        return Comparison(path, frozenset(), frozenset({STATUS}), old, silent)

    def wait(self, timeout: float) -> DarkLaunchReport:
        """The report once ``limit`` requests were compared, or what was compared by ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.comparisons) < self.limit and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.report()

    def report(self) -> DarkLaunchReport:
        with self._lock:
            results = list(self.comparisons)
        noise = frozenset().union(*(c.noise for c in results)) if results else frozenset()
        return DarkLaunchReport(len(results), tuple(c for c in results if not c.matches), noise)

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=2)


def _server(comparator: MirrorComparator) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the gateway keeps its connections to the comparator alive

        def do_GET(self) -> None:
            method = self.headers.get("X-Shiftover-Method", self.command)
            if method in ("GET", "HEAD"):  # the gateway forwards no write; refuse one all the same
                route = self.headers.get("X-Shiftover-Route", "")
                user = ((h, self.headers[h]) for h in (comparator.key_header, "Cookie") if self.headers.get(h))
                comparator.offer(Mirrored(route, method, self.path, tuple(user)))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the listen backlog: nginx opens connections in bursts

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the gateway closing a kept-alive connection is no failure

    return Server(("127.0.0.1", 0), Handler)
