"""A route move declared as data: the ``kind: route`` YAML spec and its pydantic model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shiftover.errors import SpecError
from shiftover.phases import Phase
from shiftover.spec import ApprovalSpec, check_canary_steps, read_spec_file, spec_error

ROUTE_GATES = ("error_rate", "latency_ratio", "mismatch_rate")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Upstream(_Model):
    """An HTTP service the gateway forwards to: ``host:port``."""

    address: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+:\d{1,5}$")]

    @field_validator("address")
    @classmethod
    def _port(cls, value: str) -> str:
        if not 0 < int(value.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"{value}: a port is 1-65535")
        return value

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


class Requires(_Model):
    """A table migration whose phase the route must wait for (``/orders`` reads after the table's reads)."""

    migration: str
    phase: Phase


class RouteDecl(_Model):
    """One route: a path prefix and the methods that move with it (the rest stay on the old upstream)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    prefix: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")]
    methods: tuple[str, ...] = ("GET", "HEAD")
    # Paths the comparator may replay (safe GETs): with none, it replays the GETs the gateway logged.
    samples: tuple[str, ...] = ()
    requires: Requires | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        bad = [m for m in value if m not in known]
        if bad or not value:
            raise ValueError(f"methods must be some of {sorted(known)}, not {bad or 'none'}")
        return value

    @property
    def safe(self) -> bool:
        """Only safe methods: the comparator may replay its requests."""
        return set(self.methods) <= {"GET", "HEAD"}


class RouteGateSpec(_Model):
    name: str
    threshold: float
    blocking: bool = True

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ROUTE_GATES:
            raise ValueError(f"unknown route gate {value!r}; known: {', '.join(ROUTE_GATES)}")
        return value


def _default_gates() -> tuple[RouteGateSpec, ...]:
    return (
        RouteGateSpec(name="error_rate", threshold=0.01),
        RouteGateSpec(name="latency_ratio", threshold=2.0),
        RouteGateSpec(name="mismatch_rate", threshold=0.0),
    )


class RouteCanarySpec(_Model):
    steps: tuple[Annotated[float, Field(gt=0, le=100)], ...] = (1, 10, 50, 100)
    soak_seconds: Annotated[float, Field(ge=0)] = 30
    watch_seconds: Annotated[float, Field(gt=0)] = 1  # how often the gates are judged during a soak
    min_requests: Annotated[int, Field(ge=0)] = 20  # fewer new-side requests in a soak: the gates wait
    # p99s below this count as this in the latency ratio: HAProxy logs whole milliseconds, and 5 ms
    # against 2 ms on a busy machine is noise, not a slower service.
    latency_floor_ms: Annotated[float, Field(ge=1)] = 10
    replays: Annotated[int, Field(ge=0)] = 20  # distinct GET paths of a step replayed for the mismatch gate

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        return check_canary_steps(steps)


GATEWAY_DRIVERS = ("haproxy", "nginx")


class GatewaySpec(_Model):
    """Which gateway drives the move (``driver``; HAProxy unless the spec says ``nginx``) and how it
    buckets users."""

    driver: str = "haproxy"
    # The request header whose value buckets a user (stable: a user does not flip between versions).
    key_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "X-User"
    # nginx only: the cookie that buckets a user whose request has no key header.
    key_cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")] | None = None
    # Where the gateway listens, ``host:port`` (an IPv4 address or a host name, e.g. 0.0.0.0:8080 in
    # front of the monolith); unset: 127.0.0.1 on a free port (tests, the demo, the benchmark).
    listen: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")] | None = None

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
            raise ValueError(f"listen {value!r}: the port must be 1-65535")
        return value

    def listen_address(self) -> tuple[str, int] | None:
        """``listen`` as (host, port), or None when unset."""
        if self.listen is None:
            return None
        host, port = self.listen.rsplit(":", 1)
        return host, int(port)

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in GATEWAY_DRIVERS:
            raise ValueError(f"unknown gateway driver {value!r}; known: {', '.join(GATEWAY_DRIVERS)}")
        return value

    @model_validator(mode="after")
    def _cookie_needs_nginx(self) -> GatewaySpec:
        if self.key_cookie is not None and self.driver != "nginx":
            raise ValueError(f"key_cookie needs driver nginx: {self.driver} buckets by key_header only")
        return self


class RouteMoveSpec(_Model):
    """The whole declaration of one route move."""

    kind: Literal["route"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    gateway: GatewaySpec = GatewaySpec()
    old: Upstream
    new: Upstream
    routes: tuple[RouteDecl, ...]
    canary: RouteCanarySpec = RouteCanarySpec()
    gates: tuple[RouteGateSpec, ...] = Field(default_factory=_default_gates)
    dark_launch_samples: Annotated[int, Field(ge=1)] = 50
    # A gateway that mirrors live traffic (nginx): how long the dark launch waits for its samples.
    dark_launch_seconds: Annotated[float, Field(gt=0)] = 60
    # Fields known to differ by design (a version or server name): never a mismatch (dotted paths).
    ignore_fields: tuple[str, ...] = ()
    # Who approves the switch and the retirement, and (``keys``) their public keys: the table spec's
    # ``approvals`` section, checked by the same code (signed answers, time-out, ``auto``).
    approvals: ApprovalSpec = ApprovalSpec()

    @model_validator(mode="before")
    @classmethod
    def _approvers_shorthand(cls, data: Any) -> Any:
        """A top-level ``approvers: [...]`` (the first route specs' form) is ``approvals.approvers``."""
        if not isinstance(data, dict) or "approvers" not in data:
            return data
        data = dict(data)
        approvers = data.pop("approvers")
        section = dict(data.get("approvals") or {})
        if "approvers" in section:
            raise ValueError("approvers are listed twice: keep approvals.approvers only")
        data["approvals"] = {**section, "approvers": approvers}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> RouteMoveSpec:
        if self.old.address == self.new.address:
            raise ValueError("old and new upstreams are the same address")
        if self.gateway.driver == "nginx":
            check_nginx_prefixes(self.routes)
        return self

    @field_validator("routes")
    @classmethod
    def _distinct(cls, routes: tuple[RouteDecl, ...]) -> tuple[RouteDecl, ...]:
        """Each name once, and no route the gateway could never reach: the first route whose prefix
        and method match takes a request, so a later route under an earlier one's prefix, with a
        method in common, would get no traffic (and its gates nothing to judge)."""
        names = [r.name for r in routes]
        if not names or len(set(names)) != len(names):
            raise ValueError("routes must be listed, each name once")
        for i, later in enumerate(routes):
            for earlier in routes[:i]:
                shared = [m for m in later.methods if m in earlier.methods]
                if shared and _within(later.prefix, earlier.prefix):
                    raise ValueError(
                        f"route {later.name!r} ({later.prefix}) is under route {earlier.name!r} ({earlier.prefix}) "
                        f"for {', '.join(shared)}: those requests go to {earlier.name!r}; list {later.name!r} first"
                    )
        return routes

    def route(self, name: str) -> RouteDecl:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)


def check_nginx_prefixes(routes: tuple[RouteDecl, ...]) -> None:
    """nginx picks the longest matching prefix ``location``, not the first route listed: a route
    whose prefix lies within another's would take the other's requests for its own methods."""
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if _within(later.prefix, earlier.prefix) or _within(earlier.prefix, later.prefix):
                raise ValueError(
                    f"gateway.driver nginx: routes {earlier.name!r} ({earlier.prefix}) and {later.name!r} "
                    f"({later.prefix}) share a prefix; nginx routes each prefix to one route: merge them"
                )


def _within(prefix: str, outer: str) -> bool:
    """True when every path under ``prefix`` is under ``outer`` too (the gateway's prefix rule)."""
    prefix, outer = prefix.rstrip("/"), outer.rstrip("/")
    return prefix == outer or prefix.startswith(outer + "/")


def parse_route_spec(data: dict[str, Any]) -> RouteMoveSpec:
    """Validate a route spec dict; the first problem becomes a ``SpecError`` naming its field."""
    try:
        return RouteMoveSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc) from None


def load_route_spec(path: str | Path) -> RouteMoveSpec:
    data = read_spec_file(path)
    if data.get("kind") != "route":
        raise SpecError("kind", f"{path} is no route spec (kind: route)")
    return parse_route_spec(data)


def backend_name(route: str) -> str:
    """The gateway backend of a route (its servers are ``old`` and ``new``)."""
    return f"route_{re.sub(r'[^a-z0-9_]', '_', route)}"
