"""A route spec becomes a plan: per route, in order, the stages of the strangler fig."""

from __future__ import annotations

from shiftover.plan.stages import ApprovalPolicy, NothingToUndo
from shiftover.routes.spec import RouteDecl, RouteMoveSpec
from shiftover.routes.stages import (
    DarkLaunchStage,
    PassThroughStage,
    RetireOldStage,
    RouteCanaryStep,
    RoutePlan,
    RouteStage,
    WaitForTableStage,
    WeightFlip,
)


def build_route_plan(spec: RouteMoveSpec) -> RoutePlan:
    return RoutePlan(spec.name, tuple(s for r in spec.routes for s in route_stages(spec, r)))


def route_stages(spec: RouteMoveSpec, route: RouteDecl) -> list[RouteStage]:
    n, where = route.name, f"{route.prefix} ({', '.join(route.methods)})"
    stages: list[RouteStage] = []
    if route.requires is not None:
        req = route.requires
        stages.append(
            WaitForTableStage(
                f"{n}.requires",
                n,
                f"wait until table migration {req.migration!r} is at {req.phase} or later",
                NothingToUndo("nothing moved"),
                requires=req,
            )
        )
    stages.append(
        PassThroughStage(
            f"{n}.pass_through",
            n,
            f"the gateway in front, every {where} request on the old upstream; samples answer as directly",
            WeightFlip(0),
        )
    )
    if route.safe:
        mismatch = tuple(g for g in spec.gates if g.name == "mismatch_rate")
        stages.append(
            DarkLaunchStage(
                f"{n}.dark_launch",
                n,
                dark_launch_does(spec),
                NothingToUndo("no user traffic moved"),
                mismatch,
                samples=spec.dark_launch_samples,
            )
        )
    # unsafe routes: nothing is replayed, so no mismatch gate
    live_gates = spec.gates if route.safe else tuple(g for g in spec.gates if g.name != "mismatch_rate")
    for pct in spec.canary.steps:
        full = pct == 100
        stages.append(
            RouteCanaryStep(
                f"{n}.{'switch' if full else f'canary_{pct:g}pct'}",
                n,
                f"{pct:g}% of {where} users (by {spec.gateway.key_header}) on the new upstream, "
                f"soak {spec.canary.soak_seconds:g}s while the gates watch",
                WeightFlip(0),
                live_gates,
                ApprovalPolicy(f"every {where} request goes to the new service") if full else None,
                percent=pct,
                soak_seconds=spec.canary.soak_seconds,
            )
        )
    stages.append(
        RetireOldStage(
            f"{n}.retire_old",
            n,
            f"the old upstream is removed from {where} (running gateway and config)",
            None,
            approval=ApprovalPolicy("the monolith's route is removed: a rollback needs a new config"),
        )
    )
    return stages


def dark_launch_does(spec: RouteMoveSpec) -> str:
    if spec.gateway.driver == "nginx":  # the one driver that mirrors live traffic
        return (
            f"{spec.dark_launch_samples} live safe requests mirrored by the gateway (at most "
            f"{spec.dark_launch_seconds:g}s), replayed to old twice and new once (no user served by new)"
        )
    return f"{spec.dark_launch_samples} safe requests replayed to old twice and new once (no user served by new)"
