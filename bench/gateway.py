"""Gateway benchmark on a real HAProxy or nginx (scripts/install-gateway): p50/p99 overhead against
calling the upstream directly, rollback propagation (flip -> every following request on the old
upstream), and failed requests across 20 switches under load. Ends with one JSON line.

    .venv/bin/python bench/gateway.py --requests 2000 --switches 20
    .venv/bin/python bench/gateway.py --gateway nginx   # also: overhead with the dark launch's mirror on

nginx serves one request per client connection (``keepalive_timeout 0``: a reload would otherwise
close kept-alive connections under a client that does not retry), so its overhead includes a TCP
connect per request; the direct baseline keeps its connection.

Goals (issue 14): p99 overhead <= 1 ms, rollback <= 1 s, 0 failed requests. Upstreams are the
tests' tiny threaded HTTP servers (tests/routes/conftest.py), so absolute times are Python's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiftover.routes.drivers import start_gateway  # noqa: E402
from shiftover.routes.mirror import MirrorComparator  # noqa: E402
from shiftover.routes.spec import Upstream as Upstream_  # noqa: E402
from tests.routes.conftest import Load, Upstream, route_spec  # noqa: E402


def timed_requests(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    times = []
    for i in range(n):
        t = time.perf_counter()
        conn.request("GET", f"/orders/{i % 50}", headers={"X-User": f"u{i % 500}"})
        conn.getresponse().read()
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def side(port: int, user: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/orders/1", headers={"X-User": user})
        return str(json.loads(conn.getresponse().read())["side"])
    finally:
        conn.close()


def rollback_propagation(gw, following: int = 30) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the flip command until a request is on old, with every following one on old too."""
    gw.set_split("orders_reads", 100)
    assert side(gw.port, "probe") == "new"
    t = time.perf_counter()
    gw.set_split("orders_reads", 0)
    while side(gw.port, "probe") != "old":
        assert time.perf_counter() - t < 10, "the rollback did not reach the probe within 10 s"
    seconds = time.perf_counter() - t
    stray = [u for u in range(following) if side(gw.port, f"after-{u}") != "old"]
    assert not stray, f"{len(stray)} request(s) on new after the flip"
    return seconds


def serve_comparator(old: str, new: str, limit: int, conn: Connection) -> None:
    """A comparator in its own process, as in a move (the flow's process, not the client's): its
    replays share no interpreter lock with the timed client or the upstreams."""
    comparator = MirrorComparator(Upstream_(address=old), Upstream_(address=new), "X-User", limit=limit)
    conn.send(comparator.address)
    conn.recv()  # stop
    conn.send((comparator.received, len(comparator.comparisons)))
    comparator.close()


def mirror_overhead(gw, direct: list[float], requests: int, limit: int, name: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The gateway's latency while it mirrors every request to the dark launch's comparator, which
    answers at once and replays up to ``limit`` of them (old twice, new once) in its own threads:
    with ``limit`` 0 the cost of mirroring alone; otherwise also the upstreams' threefold work,
    which on this bench runs in the timed client's process."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve_comparator, args=(gw.spec.old.address, gw.spec.new.address, limit, theirs)
    )
    process.start()
    try:
        gw.mirror("orders_reads", ours.recv())
        timed_requests(gw.port, 100)  # warm up
        via = timed_requests(gw.port, requests)
        gw.mirror("orders_reads", None)
        ours.send("stop")
        received, compared = ours.recv()
    finally:
        process.join(timeout=10)
    return {
        f"{name}_p50_ms": round(statistics.median(via), 3),
        f"{name}_p99_ms": round(pct(via, 0.99), 3),
        f"{name}_overhead_p50_ms": round(statistics.median(via) - statistics.median(direct), 3),
        f"{name}_overhead_p99_ms": round(pct(via, 0.99) - pct(direct, 0.99), 3),
        f"{name}_received": received,
        f"{name}_compared": compared,
    }


def slow_mirror_overhead(gw, direct: list[float], requests: int, delay: float = 0.15) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The gateway's latency while its mirror target takes ``delay`` s to answer (under nginx's
    200 ms mirror read timeout): a mirror that delayed the client would add ``delay`` to each request."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw.mirror("orders_reads", f"127.0.0.1:{server.server_address[1]}")
        via = timed_requests(gw.port, requests)
        gw.mirror("orders_reads", None)
    finally:
        server.shutdown()
        server.server_close()
    return {
        "slow_mirror_delay_ms": delay * 1000,
        "slow_mirror_overhead_p50_ms": round(statistics.median(via) - statistics.median(direct), 3),
        "slow_mirror_overhead_p99_ms": round(pct(via, 0.99) - pct(direct, 0.99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--gateway", choices=("haproxy", "nginx"), default="haproxy")
    args = parser.parse_args()
    old, new = Upstream("old"), Upstream("new")
    workdir = tempfile.TemporaryDirectory(prefix="shiftover-bench-gateway-")
    gw = start_gateway(route_spec(old, new, gateway={"driver": args.gateway}), workdir=Path(workdir.name))
    try:
        timed_requests(old.server.server_address[1], 200)  # warm up
        timed_requests(gw.port, 200)
        direct, via = [], []
        for _ in range(5):  # interleaved rounds: a busy machine hurts both alike
            direct += timed_requests(old.server.server_address[1], args.requests // 5)
            via += timed_requests(gw.port, args.requests // 5)
        mirrored = {}
        if args.gateway == "nginx":
            n = args.requests // 2
            mirrored = slow_mirror_overhead(gw, direct, n // 2) | mirror_overhead(gw, direct, n, 0, "mirror_only")
            mirrored |= mirror_overhead(gw, direct, n, n, "mirror_replay")
        rollbacks = [rollback_propagation(gw) for _ in range(10)]
        with Load(gw.port) as load:
            time.sleep(0.3)
            for i in range(args.switches):
                gw.set_split("orders_reads", 100 if i % 2 == 0 else 0)
                time.sleep(0.15)
            time.sleep(0.3)
        result = {
            "gateway": args.gateway,
            "direct_p50_ms": round(statistics.median(direct), 3),
            "direct_p99_ms": round(pct(direct, 0.99), 3),
            "gateway_p50_ms": round(statistics.median(via), 3),
            "gateway_p99_ms": round(pct(via, 0.99), 3),
            "overhead_p50_ms": round(statistics.median(via) - statistics.median(direct), 3),
            "overhead_p99_ms": round(pct(via, 0.99) - pct(direct, 0.99), 3),
            "rollback_max_s": round(max(rollbacks), 4),
            "rollback_p50_s": round(statistics.median(rollbacks), 4),
            "switches": args.switches,
            "requests_during_switches": load.sent,
            "failed_requests": len(load.failures),
            "sides_during_switches": load.sides,
            **mirrored,
        }
        print(
            f"overhead p50 {result['overhead_p50_ms']} ms, p99 {result['overhead_p99_ms']} ms "
            f"(direct p99 {result['direct_p99_ms']}, gateway p99 {result['gateway_p99_ms']}); "
            f"rollback max {result['rollback_max_s'] * 1000:.1f} ms; "
            f"{result['failed_requests']} failed of {load.sent} across {args.switches} switches"
            + (
                f"; mirror to a target answering in {mirrored['slow_mirror_delay_ms']:g} ms: overhead p50 "
                f"{mirrored['slow_mirror_overhead_p50_ms']} ms"
                f"; mirror on (no replay / replaying): overhead p50 {mirrored['mirror_only_overhead_p50_ms']} / "
                f"{mirrored['mirror_replay_overhead_p50_ms']} ms, p99 {mirrored['mirror_only_overhead_p99_ms']} / "
                f"{mirrored['mirror_replay_overhead_p99_ms']} ms"
                if mirrored
                else ""
            )
        )
        print(json.dumps(result))
    finally:
        gw.stop()
        old.close()
        new.close()
        workdir.cleanup()


if __name__ == "__main__":
    main()
