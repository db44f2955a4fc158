"""The ASGI middleware reads the route's flag from the flag store (through the cached client)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shiftover.control.store import ControlStore
from shiftover.flags.client import FlagClient
from shiftover.routes.asgi import RouteSplitMiddleware, set_route_flag
from shiftover.routes.spec import RouteDecl

ROUTES = (RouteDecl(name="orders_reads", prefix="/orders", methods=("GET",)),)


def app(side: str) -> Any:
    async def serve(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": side.encode()})

    return serve


def call(mw: RouteSplitMiddleware, path: str, user: str | None = None, method: str = "GET") -> str:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(b"x-user", user.encode())] if user else []
    scope = {"type": "http", "path": path, "method": method, "headers": headers}
    asyncio.run(mw(scope, receive, send))
    return str(sent[-1]["body"].decode())


def test_the_share_follows_the_flag_and_users_never_move_back(control_store: ControlStore) -> None:
    engine = control_store.engine
    set_route_flag(engine, "m", "orders_reads", 0, "test")
    with FlagClient(engine, ttl=0.05) as flags:
        mw = RouteSplitMiddleware(app("old"), app("new"), flags, "m", ROUTES)
        users = [f"u{i}" for i in range(400)]
        assert {call(mw, "/orders/1", u) for u in users} == {"old"}
        on_new: set[str] = set()
        for pct in (10, 50, 90):
            set_route_flag(engine, "m", "orders_reads", pct, "test")
            time.sleep(0.3)  # a few TTLs
            now = {u for u in users if call(mw, "/orders/1", u) == "new"}
            assert on_new <= now and abs(len(now) / len(users) - pct / 100) < 0.1
            on_new = now
        assert call(mw, "/customers/1", "u1") == "old"  # not a moving route
        assert call(mw, "/orders/1", "u1", method="POST") == "old"  # a method that does not move
        assert call(mw, "/orders/1") == "old"  # no user key: only a full switch moves it
        set_route_flag(engine, "m", "orders_reads", 100, "test")
        time.sleep(0.3)
        assert call(mw, "/orders/1") == "new"
        set_route_flag(engine, "m", "orders_reads", 0, "rollback")
        time.sleep(0.3)
        assert {call(mw, "/orders/1", u) for u in users} == {"old"}
