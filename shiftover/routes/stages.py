"""The typed stages of a route move, one list per route, like the table move's (``shiftover.plan``).

Each stage declares as data what it does, its gates, its approval and its inverse: a weight flip
back to the old upstream (instant, through the gateway's runtime API), nothing to undo, or None
when it cannot be undone. The evaluator (``flows/routes.py``) walks the list; ``explain`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from shiftover.plan.stages import ApprovalPolicy, NothingToUndo
from shiftover.routes.spec import Requires, RouteGateSpec


@dataclass(frozen=True)
class WeightFlip:
    """An inverse that sets the route's share of new-side traffic (0: all on the old upstream)."""

    percent_new: float = 0.0

    def describe(self) -> str:
        return f"gateway weights -> {self.percent_new:g}% new (runtime API, no reload)"


RouteInverse = WeightFlip | NothingToUndo


@dataclass(frozen=True)
class RouteStage:
    name: str  # unique within the route move: "<route>.<step>"
    route: str
    does: str
    inverse: RouteInverse | None  # None: irreversible
    gates: tuple[RouteGateSpec, ...] = ()
    approval: ApprovalPolicy | None = None

    kind: ClassVar[str] = "route_stage"

    @property
    def reversible(self) -> bool:
        return self.inverse is not None


@dataclass(frozen=True)
class WaitForTableStage(RouteStage):
    """The table migration behind the route has reached a phase (checked in the control store)."""

    kind: ClassVar[str] = "wait_for_table"
    requires: Requires | None = None


@dataclass(frozen=True)
class PassThroughStage(RouteStage):
    """The gateway sits in front with every request on the old upstream; each sample path answers
    through it as it does from the old upstream directly."""

    kind: ClassVar[str] = "pass_through"


@dataclass(frozen=True)
class DarkLaunchStage(RouteStage):
    """Safe requests replayed to old twice and new once; the mismatch gate judges the new service
    before any user reaches it."""

    kind: ClassVar[str] = "dark_launch"
    samples: int = 50


@dataclass(frozen=True)
class RouteCanaryStep(RouteStage):
    """A share of users (by their stable key) on the new upstream for a soak while the gates watch;
    a failing gate rolls the route back at once."""

    kind: ClassVar[str] = "route_canary"
    percent: float = 100.0
    soak_seconds: float = 0.0


@dataclass(frozen=True)
class RetireOldStage(RouteStage):
    """The old upstream leaves the route (running gateway and its config)."""

    kind: ClassVar[str] = "retire_old"


@dataclass(frozen=True)
class RoutePlan:
    move: str
    stages: tuple[RouteStage, ...]

    def for_route(self, route: str) -> tuple[RouteStage, ...]:
        return tuple(s for s in self.stages if s.route == route)

    def data(self) -> dict[str, Any]:
        """The plan as data (``shiftover plan --json``): the same fields ``explain`` prints."""
        return {
            "kind": "route",
            "name": self.move,
            "stages": [
                {
                    "name": s.name,
                    "route": s.route,
                    "type": s.kind,
                    "does": s.does,
                    "gates": [{"name": g.name, "threshold": g.threshold, "blocking": g.blocking} for g in s.gates],
                    "approval": s.approval.why if s.approval else None,
                    "reversible": s.reversible,
                    "undo": s.inverse.describe() if s.inverse else None,
                }
                for s in self.stages
            ],
        }

    def explain(self) -> str:
        """What ``shiftover plan`` would print for a route move: every stage, its gates, approval and undo."""
        lines = [f"route move {self.move}:"]
        for i, s in enumerate(self.stages, 1):
            gates = ", ".join(f"{g.name}<={g.threshold:g}" for g in s.gates) or "-"
            undo = s.inverse.describe() if s.inverse else "IRREVERSIBLE"
            approve = f"; approval: {s.approval.why}" if s.approval else ""
            lines.append(f"{i:>2}. {s.name} [{s.kind}] {s.does}; gates: {gates}; undo: {undo}{approve}")
        return "\n".join(lines)
