"""The route move's gates, judged on real traffic through the gateway (its access log) and on the
dark-launch comparator: ``(RouteWindow, RouteGateSpec) -> GateResult``, listed in ``ROUTE_GATES``.

A gate that has seen fewer new-side requests than the spec's ``min_requests`` has not judged
(``metrics["judged"]`` False): during a soak it waits, at the soak's end it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shiftover.checks.context import GateResult
from shiftover.routes.compare import DarkLaunchReport
from shiftover.routes.spec import RouteGateSpec
from shiftover.routes.traffic import Hit, side_stats


@dataclass(frozen=True)
class RouteWindow:
    """What the route's gates look at: the requests logged for its backend since the step began."""

    route: str
    hits: tuple[Hit, ...] = ()
    dark: DarkLaunchReport | None = None
    min_requests: int = 1
    baseline_old_p99_ms: float | None = None  # the old side's p99 before the step (100 % leaves old idle)
    latency_floor_ms: float = 1.0


def error_rate(window: RouteWindow, gate: RouteGateSpec) -> GateResult:
    new = side_stats(list(window.hits), "new")
    judged = new.requests >= window.min_requests
    passed = judged and new.error_rate <= gate.threshold
    summary = (
        f"new upstream: {new.errors} error(s) in {new.requests} request(s) ({new.error_rate:.2%}), "
        f"limit {gate.threshold:.2%}"
        if judged
        else f"only {new.requests} new-side request(s) of the {window.min_requests} needed to judge"
    )
    return GateResult(
        "error_rate",
        passed,
        summary,
        gate.blocking,
        metrics={"judged": judged, "requests": new.requests, "errors": new.errors, "rate": new.error_rate},
    )


def latency_ratio(window: RouteWindow, gate: RouteGateSpec) -> GateResult:
    """p99 of the new side over p99 of the old, each floored at the spec's ``latency_floor_ms``."""
    hits = list(window.hits)
    new, old = side_stats(hits, "new"), side_stats(hits, "old")
    old_p99 = old.p99_ms if old.requests >= window.min_requests else window.baseline_old_p99_ms
    judged = new.requests >= window.min_requests and new.p99_ms is not None and old_p99 is not None
    if not judged or new.p99_ms is None or old_p99 is None:
        return GateResult(
            "latency_ratio",
            False,
            f"too few requests to compare p99 (new {new.requests}, old {old.requests})",
            gate.blocking,
            metrics={"judged": False},
        )
    floor = window.latency_floor_ms
    ratio = max(new.p99_ms, floor) / max(old_p99, floor)
    return GateResult(
        "latency_ratio",
        ratio <= gate.threshold,
        f"p99 new {new.p99_ms:g} ms / old {old_p99:g} ms (each at least {floor:g}) = {ratio:.2f}, "
        f"limit {gate.threshold:g}",
        gate.blocking,
        metrics={"judged": True, "ratio": ratio, "p99_new_ms": new.p99_ms, "p99_old_ms": old_p99},
    )


def mismatch_rate(window: RouteWindow, gate: RouteGateSpec) -> GateResult:
    dark = window.dark
    if dark is None or dark.compared == 0:
        return GateResult("mismatch_rate", False, "nothing compared", gate.blocking, metrics={"judged": False})
    return GateResult(
        "mismatch_rate",
        dark.mismatch_rate <= gate.threshold,
        f"{len(dark.mismatches)} of {dark.compared} replayed request(s) differ outside the noise "
        f"({dark.mismatch_rate:.2%}, limit {gate.threshold:.2%}); noise fields: {', '.join(sorted(dark.noise)) or '-'}",
        gate.blocking,
        rows=dark.samples(),
        metrics={"judged": True, "compared": dark.compared, "mismatches": len(dark.mismatches)},
    )


ROUTE_GATES: Mapping[str, Callable[[RouteWindow, RouteGateSpec], GateResult]] = {
    "error_rate": error_rate,
    "latency_ratio": latency_ratio,
    "mismatch_rate": mismatch_rate,
}


def judge(window: RouteWindow, gates: tuple[RouteGateSpec, ...]) -> list[GateResult]:
    return [ROUTE_GATES[g.name](window, g) for g in gates]
