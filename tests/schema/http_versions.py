"""Versions of the example orders application (``examples/app/amounts_service.py``) under HTTP load
from one thread each, for the schema-change tests: each remembers the value of every write the
application acknowledged, so the checks read back through the applications and with plain SQL,
never through Shiftover. Values travel as integer cents; each version's form is computed here in
Python, independently of the SQL under test."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from shiftover.connect import get_engine
from shiftover.demo.expand import expected_cents
from shiftover.examples.app.amounts_service import AmountsService
from shiftover.examples.app.service import make_server


def body_of(version: str, cents: int) -> dict[str, Any]:
    """What ``version`` is sent for an amount of ``cents``."""
    if version == "amount":
        return {"amount": str(Decimal(cents) / 100)}
    if version == "amount_parts":
        return {"amount_units": cents // 100, "amount_subunits": cents % 100}
    return {"amount_cents": cents}


def cents_of(version: str, answer: dict[str, Any]) -> int | None:
    """The amount in cents that ``version`` answered."""
    if version == "amount":
        return expected_cents(answer["amount"])
    if version == "amount_parts":
        units, subunits = answer["amount_units"], answer["amount_subunits"]
        return None if units is None or subunits is None else units * 100 + subunits
    return answer["amount_cents"]


@dataclass
class VersionLoad:
    """One application version over HTTP from one thread: PUTs of the keys it owns (updates, and
    inserts of new keys where ``inserts`` has some), GETs of keys it wrote, compared as it goes."""

    service: AmountsService
    owned: list[int]
    inserts: list[int]
    seed: int
    rows: int  # keys above it are inserts
    expected: dict[int, int] = field(default_factory=dict)  # key -> cents of its last acknowledged write
    failures: list[str] = field(default_factory=list)
    mismatches: list[tuple[int, int, Any]] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.server = make_server(self.service)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> VersionLoad:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def busy(self, requests: int = 40, timeout: float = 60) -> None:
        """Wait until this version has served ``requests`` more, so every stage runs under load."""
        target, deadline = self.requests + requests, time.monotonic() + timeout
        while self.requests < target and time.monotonic() < deadline and not self.failures:
            time.sleep(0.02)

    def pause(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)

    def close(self) -> None:
        """Stop the load and the server (again: nothing more)."""
        if self._thread is not None:
            self.pause()
        if not self._closed:
            self._closed = True
            self.server.shutdown()
            self.server.server_close()

    def request(self, conn: http.client.HTTPConnection, method: str, key: int, body: Any = None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, f"/orders/{key}", body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def body(self, cents: int) -> dict[str, Any]:
        return body_of(self.service.version, cents)

    def cents(self, answer: dict[str, Any]) -> int | None:
        return cents_of(self.service.version, answer)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_port, timeout=30)
        while not self._stop.is_set():
            roll = self.rng.random()
            if roll < 0.05 and self.inserts:
                key, method = self.inserts.pop(), "PUT"
            elif roll < 0.65:
                key, method = self.rng.choice(self.owned), self.rng.choice(("PUT", "PATCH"))
            else:
                key, method = self.rng.choice(list(self.expected) or self.owned), "GET"
            cents = self.rng.randrange(100, 10_000_000)
            try:
                status, answer = self.request(conn, method, key, None if method == "GET" else self.body(cents))
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(f"{method} {key}: {error}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.server_port, timeout=30)
                continue
            self.requests += 1
            if status >= 300:
                self.failures.append(f"{method} {key}: {status} {answer}")
            elif method == "GET":
                if key in self.expected and self.cents(answer) != self.expected[key]:
                    self.mismatches.append((key, self.expected[key], answer))
            else:
                self.expected[key] = cents
                if key > self.rows and key not in self.owned:
                    self.owned.append(key)
        conn.close()


def read_table(url: str, names: tuple[str, ...] = ("amount", "amount_cents")) -> dict[int, tuple[Any, ...]]:
    """Every row's columns among ``names`` that the table has now, by plain SQL."""
    with get_engine(url).connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("orders")]
        wanted = [c for c in names if c in columns]
        rows = conn.execute(sa.text(f"SELECT id, {', '.join(wanted)} FROM orders")).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def cross_read(loads: list[VersionLoad], expected: dict[int, int]) -> list[tuple[str, int, int, Any]]:
    """With the load paused: every acknowledged key read through each running version."""
    wrong = []
    for load in loads:
        conn = http.client.HTTPConnection("127.0.0.1", load.server.server_port, timeout=30)
        for key, cents in expected.items():
            status, answer = load.request(conn, "GET", key)
            if status != 200 or load.cents(answer) != cents:
                wrong.append((load.service.version, key, cents, answer))
        conn.close()
    return wrong
