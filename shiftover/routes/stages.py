"""The typed stages of a route move, one list per route, like the table move's (``shiftover.plan``).

Each stage declares as data what it does, its gates, its approval and its inverse: a weight flip
back to the old upstream (instant, through the gateway's runtime API), nothing to undo, or None
when it cannot be undone. The one evaluator (``flows/evaluate.py``) walks the list, as it walks a
table move's; ``explain`` prints it. A route stage is done when it was recorded done since the
route's last rollback (``RouteState``, read from the control store's audit by ``read_route_state``):
a route has no lifecycle phase, and a rollback restarts it from pass-through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from shiftover.control.store import ControlStore
from shiftover.plan.stages import ApprovalPolicy, GateTiming, NothingToUndo
from shiftover.routes.spec import Requires, RouteGateSpec

ROUTE_FLOW = "route-move"


@dataclass(frozen=True)
class WeightFlip:
    """An inverse that sets the route's share of new-side traffic (0: all on the old upstream)."""

    percent_new: float = 0.0

    def describe(self) -> str:
        return f"gateway weights -> {self.percent_new:g}% new (HAProxy: runtime API; nginx: graceful reload)"


RouteInverse = WeightFlip | NothingToUndo


@dataclass(frozen=True)
class RouteState:
    """What a route move's ``done`` predicates read: each route's stages recorded done since that
    route's last rollback."""

    completed: frozenset[str] = frozenset()


def route_completed(store: ControlStore, move: str) -> dict[str, set[str]]:
    """Per route, its stages recorded done (audit ``route_stage``) since its last ``route_rollback``."""
    done: dict[str, set[str]] = {}
    for entry in store.audit_entries(move):
        detail = entry["detail"] or {}
        route = detail.get("route")
        if route is None:
            continue
        if entry["action"] == "route_rollback":
            done[str(route)] = set()
        elif entry["action"] == "route_stage":
            done.setdefault(str(route), set()).add(str(detail["stage"]))
    return done


def read_route_state(store: ControlStore, move: str) -> RouteState:
    return RouteState(frozenset(s for stages in route_completed(store, move).values() for s in stages))


@dataclass(frozen=True)
class RouteStage:
    name: str  # unique within the route move: "<route>.<step>"
    route: str
    does: str
    inverse: RouteInverse | None  # None: irreversible
    gates: tuple[RouteGateSpec, ...] = ()
    approval: ApprovalPolicy | None = None

    kind: ClassVar[str] = "route_stage"
    flow: ClassVar[str] = ROUTE_FLOW
    # within: every route gate is judged by the stage's own work (the dark launch, a canary's soak),
    # so a failure can roll the route back before the stage ends.
    gates_run: ClassVar[GateTiming] = "within"

    @property
    def reversible(self) -> bool:
        return self.inverse is not None

    def done(self, state: RouteState) -> bool:
        return self.name in state.completed


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


ROUTE_STAGE_TYPES: tuple[type[RouteStage], ...] = (
    WaitForTableStage,
    PassThroughStage,
    DarkLaunchStage,
    RouteCanaryStep,
    RetireOldStage,
)


@dataclass(frozen=True)
class RoutePlan:
    move: str
    stages: tuple[RouteStage, ...]

    def __iter__(self) -> Iterator[RouteStage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def for_route(self, route: str) -> tuple[RouteStage, ...]:
        return tuple(s for s in self.stages if s.route == route)

    def finished(self, state: RouteState) -> bool:
        return all(s.done(state) for s in self.stages)

    def stops_after(self, index: int, stop_after: str) -> bool:
        """True after the named stage, or after the last stage of the named route."""
        stage = self.stages[index]
        following = self.stages[index + 1] if index + 1 < len(self.stages) else None
        return stage.name == stop_after or (
            stage.route == stop_after and (following is None or following.route != stop_after)
        )

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
