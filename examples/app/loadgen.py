"""A load generator for the orders service: concurrent upserts, updates, deletes and reads.

    python examples/app/loadgen.py --url http://127.0.0.1:8080 --seconds 30 --threads 4

Prints how many requests succeeded and failed per operation, and how many distinct keys were
written; ``run_load`` returns the same counts and the written keys themselves.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

STATUSES = ("new", "paid", "shipped", "delivered", "cancelled")


@dataclass
class LoadStats:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    written_keys: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())

    def summary(self) -> str:
        ops = sorted(set(self.ok) | set(self.failed))
        return ", ".join(f"{op}: {self.ok[op]} ok / {self.failed[op]} failed" for op in ops)


def random_order(rng: random.Random) -> dict[str, Any]:
    """A full row body for ``PUT`` (the service takes the id from the path)."""
    created = datetime(2025, 1, 1) + timedelta(seconds=rng.randrange(10**7))
    return {
        "customer_id": rng.randrange(1, 50_000),
        "amount": f"{rng.randrange(100, 10**6) / 100:.2f}",
        "status": rng.choice(STATUSES),
        "note": rng.choice([None, f"note {rng.randrange(10**6)}"]),
        "created_at": created.isoformat(),
        "updated_at": _now(),
    }


def _now() -> str:
    """Writes stamp ``updated_at`` as a service would, so checks of recently changed rows see them."""
    return datetime.now().replace(microsecond=0).isoformat()


def _worker(
    base: str, stop: threading.Event, keys: range, seed: int, stats: LoadStats, lock: threading.Lock, pause: float
) -> None:
    rng = random.Random(seed)
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    while not stop.is_set():
        key = rng.choice(keys)
        op = rng.choices(("put", "patch", "delete", "get"), weights=(5, 3, 1, 3))[0]
        method, body = {
            "put": ("PUT", random_order(rng)),
            "patch": (
                "PATCH",
                {"status": rng.choice(STATUSES), "note": f"patched {rng.random():.6f}", "updated_at": _now()},
            ),
            "delete": ("DELETE", None),
            "get": ("GET", None),
        }[op]
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, f"/orders/{key}", body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            good = response.status < 400 or (op == "get" and response.status == 404)
        except (OSError, http.client.HTTPException) as exc:
            good = False
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
            with lock:
                stats.errors.append(f"{op} {key}: {exc}")
        with lock:
            (stats.ok if good else stats.failed)[op] += 1
            if op != "get":
                stats.written_keys.add(key)
        if pause:
            time.sleep(pause)
    conn.close()


def run_load(
    base_url: str,
    seconds: float,
    *,
    threads: int = 4,
    keys: range = range(1, 2001),
    seed: int = 1,
    pause: float = 0.0,
    stop: threading.Event | None = None,
) -> LoadStats:
    """Drive the service for ``seconds`` (or until ``stop`` is set) from ``threads`` connections."""
    stats, lock, stop = LoadStats(), threading.Lock(), stop or threading.Event()
    workers = [
        threading.Thread(target=_worker, args=(base_url, stop, keys, seed + i, stats, lock, pause), daemon=True)
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keys", type=int, default=2000, help="write keys 1..N")
    args = parser.parse_args(argv)
    stats = run_load(args.url, args.seconds, threads=args.threads, keys=range(1, args.keys + 1))
    print(stats.summary())
    print(f"failed requests: {stats.total_failed}; distinct keys written: {len(stats.written_keys)}")


if __name__ == "__main__":
    main()
