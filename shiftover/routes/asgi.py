"""In-process route moves for Python applications: an ASGI middleware that sends a declared route's
requests to the new implementation or the old one by the same share the gateway applies, read
from the flag store through the cached ``FlagClient`` (a flip reaches every instance within one TTL).

The route move's evaluator writes the flag (``route_flag_key``) with every weight change, rollback
included. Users are bucketed by ``shiftover.flags.bucketing`` (stable: raising the share never moves
a user back); the gateway hashes with HAProxy's own consistent hash, so one user may land on
different sides in the two: use one or the other for a given route, not both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from shiftover.control.store import Fence
from shiftover.flags.client import FlagClient
from shiftover.flags.store import set_flag
from shiftover.routes.spec import RouteDecl

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def route_flag_key(move: str, route: str) -> str:
    """The flag holding the share (0-100) of the route's users on the new implementation."""
    return f"{move}:route:{route}"


def set_route_flag(
    engine: Engine, move: str, route: str, percent_new: float, actor: str, reason: str = "", fence: Fence | None = None
) -> int:
    """Write the route's share; with a ``fence`` (the move's lease), only while that lease holds."""
    key = route_flag_key(move, route)
    return set_flag(engine, key, percent_new, actor, migration=move, reason=reason, fence=fence)


def matching_route(routes: Sequence[RouteDecl], path: str, method: str) -> RouteDecl | None:
    """The declared route a request belongs to (same prefix rule as the gateway's ACLs)."""
    for r in routes:
        prefix = r.prefix.rstrip("/")
        if (path == prefix or path.startswith(prefix + "/")) and method in r.methods:
            return r
    return None


class RouteSplitMiddleware:
    """``old`` serves every request unless it belongs to a moving route and its user is in the share."""

    def __init__(
        self,
        old: ASGIApp,
        new: ASGIApp,
        flags: FlagClient,
        move: str,
        routes: Sequence[RouteDecl],
        key_header: str = "X-User",
    ) -> None:
        self.old, self.new, self.flags, self.move, self.routes = old, new, flags, move, tuple(routes)
        self.key_header = key_header.lower().encode()

    def chooses_new(self, scope: Scope) -> bool:
        if scope.get("type") != "http":
            return False
        route = matching_route(self.routes, scope.get("path", ""), scope.get("method", "GET"))
        if route is None:
            return False
        user = next((v.decode() for k, v in scope.get("headers", []) if k == self.key_header), None)
        key = route_flag_key(self.move, route.name)
        if user is None:  # no key to bucket by: only a full switch moves the request
            return float(self.flags.get(key, 0.0)) >= 100
        return self.flags.is_enabled_for(key, user)

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        app = self.new if self.chooses_new(scope) else self.old
        await app(scope, receive, send)
