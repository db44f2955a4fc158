"""A route move's runs on the one evaluator (``flows/evaluate.py``): the route stages
(``shiftover.routes``) are walked exactly as a table move's are: skip what is done, ask for the
approval a stage declares (the same request, typed form and signatures as a table's), do its work
against the gateway, and record it done in the control store (audit ``route_stage``, fenced by the
move's lease), so a re-run resumes. ``RouteRun`` is the run's context (``StagedRun``); the runners
below are plain functions of it, listed in ``flows/runners.py`` with every other stage type's.

A failing canary gate flips the route back to the old upstream at once (the stage's inverse: a
weight change over the runtime API) and records ``route_rollback``; the next run starts that route
again from pass-through. The Prefect flows ``route-move`` and ``route-rollback`` wrap these
functions (``flows/route_move.py``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shiftover.checks.context import GateResult
from shiftover.checks.report import publish_gate_results
from shiftover.checks.routes import RouteWindow, judge
from shiftover.control.lease import Lease, revoke_lease
from shiftover.control.store import ControlStore
from shiftover.errors import GateError, LeaseLostError, SpecError, StageOrderError
from shiftover.flows.context import RunOptions
from shiftover.flows.evaluate import Outcome, StageRunner, ask_person, evaluate
from shiftover.phases import is_at_least
from shiftover.routes.asgi import set_route_flag
from shiftover.routes.compare import DarkLaunchReport, compare_path, dark_launch
from shiftover.routes.gateway import Gateway, MirroringGateway, Split
from shiftover.routes.mirror import MirrorComparator
from shiftover.routes.plan import build_route_plan
from shiftover.routes.spec import RouteMoveSpec, Upstream, backend_name
from shiftover.routes.stages import (
    DarkLaunchStage,
    PassThroughStage,
    RetireOldStage,
    RouteCanaryStep,
    RoutePlan,
    RouteStage,
    RouteState,
    WaitForTableStage,
    read_route_state,
    route_completed,
)
from shiftover.routes.traffic import AccessLog, side_stats

# (stage, summary shown to the approver) -> who approved; raises ApprovalError to refuse. A seam for
# tests without Prefect: a run without one asks a person (``flows/evaluate.ask_person``).
Approver = Callable[[RouteStage, str], str]


@dataclass(frozen=True)
class RouteMove:
    """What a route move's run works on (a ``RunSubject``): its spec and control store."""

    spec: RouteMoveSpec
    store: ControlStore

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class RouteRun:
    """One run of a route move: the context every route stage runner gets (a ``StagedRun``)."""

    migration: RouteMove
    plan: RoutePlan
    gateway: Gateway
    log: AccessLog
    lease: Lease | None = None  # the run's hold on the move: an operator's rollback revokes it
    holder: str = "shiftover"
    actor: str = "shiftover"
    options: RunOptions = field(default_factory=lambda: RunOptions(suspend=False))
    approver: Approver | None = None
    baseline_old_p99_ms: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> RouteMoveSpec:
        return self.migration.spec

    @property
    def store(self) -> ControlStore:
        return self.migration.store

    @property
    def name(self) -> str:
        return self.migration.name

    def state(self) -> RouteState:
        return read_route_state(self.store, self.name)

    def prepare(self, stage: RouteStage) -> None:
        """Nothing: the gateway is put back where the done stages left it once, at the edge."""

    def prepare_walk(self, flows: Collection[str] | None, stop_after: str | None) -> None:
        """Nothing to get ready before the walk."""

    def gate(self, stage: RouteStage) -> list[str]:
        """No gates before or after a route stage: each is judged within its work (``gates_run``)."""
        return []

    def approval_summary(self, stage: RouteStage, gate_lines: list[str]) -> str:
        split = self.gateway.split(stage.route)
        return "\n".join(
            [
                f"## Approve `{stage.name}` for route move `{self.name}`",
                "",
                f"- **What happens:** {stage.does}.",
                f"- **Why a person approves:** {stage.approval.why if stage.approval else '-'}.",
                f"- **Undo:** {stage.inverse.describe() if stage.inverse else 'this step cannot be undone'}.",
                f"- **Now:** {split.percent_new:g}% of the route on the new upstream.",
                *gate_lines,
                "",
                f"Type **{self.name}** in *Confirm Name* to approve.",
            ]
        )

    def complete(self, stage: RouteStage, reason: str, detail: dict[str, Any]) -> None:
        """Recorded done (audit ``route_stage``) only while the lease holds: a stage an operator's
        rollback overtook is not, so a re-run resumes there."""
        record = {"route": stage.route, "stage": stage.name, **detail}
        self.store.audit(self.name, self.actor, "route_stage", record, lease=self.lease)

    def position(self) -> dict[str, Any]:
        return {
            "move": self.name,
            "percent_new": {r.name: self.gateway.split(r.name).percent_new for r in self.spec.routes},
        }


def open_route_move(
    spec: RouteMoveSpec,
    store: ControlStore,
    gateway: Gateway,
    log: AccessLog,
    approver: Approver | None = None,
    actor: str = "shiftover",
    lease: Lease | None = None,
    options: RunOptions | None = None,
) -> RouteRun:
    """Register the move in the control store (kept as a migration row holding its spec), or refresh
    its spec. A run holding a ``lease`` registered it already (the lease lives on that row): the
    route-move flow enrolls it first and forgets it if its first run is refused
    (``flows/route_move.py``); without a lease a refused run cannot remove it."""
    store.register(spec.name, spec.model_dump(mode="json", by_alias=True), actor)
    return RouteRun(
        RouteMove(spec, store),
        build_route_plan(spec),
        gateway,
        log,
        lease,
        lease.holder if lease is not None else actor,
        actor,
        options or RunOptions(suspend=False),
        approver,
    )


def completed(store: ControlStore, move: str, route: str) -> set[str]:
    """The route's stages recorded done since its last rollback."""
    return route_completed(store, move).get(route, set())


def evaluate_routes(run: RouteRun) -> dict[str, Any]:
    """Put every route back where its done stages left it, then run what is not done on the one
    evaluator; a gate failure raises ``GateError`` after the route was rolled back."""
    done = run.state()
    for route in run.spec.routes:
        restore_split(run, route.name, done)
    return evaluate(run, approve=ask_person if run.approver is None else seam(run.approver))


def seam(approver: Approver) -> Callable[[RouteRun, RouteStage, str], str]:
    """A test's approver in the evaluator's place for asking a person, audited as an answer is."""

    def approve(run: RouteRun, stage: RouteStage, summary: str) -> str:
        who = approver(stage, summary)
        run.store.audit(run.name, who, "approval", {"step": stage.name, "approver": who})
        return who

    return approve


def shift(run: RouteRun, route: str, percent_new: float, reason: str) -> Split:
    """The gateway's weights, then the route's flag (read by in-process routers, ``routes/asgi.py``).

    Fenced by the run's lease: checked before the flip, and again by the flag's write (in its own
    transaction), undoing the flip when an operator's rollback revoked the lease in between (the
    gateway has no transaction to share); the flag then keeps the rollback's value."""
    if run.lease is not None:
        run.lease.ensure()
    split = run.gateway.set_split(route, percent_new)
    try:
        set_route_flag(run.store.engine, run.spec.name, route, split.percent_new, run.actor, reason, fence=run.lease)
    except LeaseLostError:
        run.gateway.set_split(route, 0)
        raise
    publish_split(run, reason)
    return split


def publish_split(run: RouteRun, why: str) -> None:
    """The traffic split of every route as a Prefect table artifact (inside a flow run only)."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_table_artifact

    from shiftover.story import artifact_key

    rows = []
    for r in run.spec.routes:
        split = run.gateway.split(r.name)
        rows.append(
            {
                "route": r.name,
                "prefix": r.prefix,
                "methods": " ".join(r.methods),
                "percent_new": split.percent_new,
                "old_weight": split.old_weight,
                "new_weight": split.new_weight,
                "old_upstream": "present" if split.old_present else "retired",
            }
        )
    create_table_artifact(
        table=rows, key=artifact_key(run.spec.name, "traffic-split"), description=f"traffic split after {why}"
    )


def restore_split(run: RouteRun, route: str, state: RouteState) -> None:
    """A re-run puts the route back where its last completed canary step left it."""
    steps = [s for s in run.plan.for_route(route) if isinstance(s, RouteCanaryStep) and s.done(state)]
    retired = any(isinstance(s, RetireOldStage) and s.done(state) for s in run.plan.for_route(route))
    if steps and not retired:
        shift(run, route, max(s.percent for s in steps), "a re-run resumes at its last completed step")


def run_wait_for_table(run: RouteRun, stage: RouteStage) -> dict[str, Any]:
    assert isinstance(stage, WaitForTableStage) and stage.requires is not None
    req = stage.requires
    phase = run.store.phase(req.migration)
    if not is_at_least(phase, req.phase):
        raise StageOrderError(req.migration, phase, str(req.phase), "migrate")
    return {"table_phase": str(phase)}


def require_upstreams(run: RouteRun, stage: RouteStage) -> None:
    """Before a route's pass-through shifts anything: both upstreams accept a connection, else the
    spec's address is refused by its field. A wrong address is then refused before the first stage
    writes the route's flag, so a first run leaves no migration (``flows/route_move.py``); only a
    connection, no request: a route with unsafe methods is never sent one twice."""
    for side, upstream in (("old", run.spec.old), ("new", run.spec.new)):
        try:
            socket.create_connection((upstream.host, upstream.port), timeout=5).close()
        except OSError as exc:
            raise SpecError(f"{side}.address", f"nothing answers on {upstream.address} ({exc})") from None


def run_pass_through(run: RouteRun, stage: RouteStage) -> dict[str, Any]:
    """Every request of the route on the old upstream; each sample answers through the gateway as
    the old upstream answers directly (fields differing between two direct answers are noise).
    A route with unsafe methods replays nothing, and says so."""
    split = shift(run, stage.route, 0, stage.name)
    decl = run.spec.route(stage.route)
    paths = (list(decl.samples) or [decl.prefix]) if decl.safe else []
    gw = gateway_upstream(run)
    differing = []
    for path in paths:
        c = compare_path(run.spec.old, gw, path, {})
        if not c.matches:
            differing.append({"path": path, "fields": sorted(c.mismatched)})
    summary = (
        f"{len(paths) - len(differing)} of {len(paths)} sample(s) answer through the gateway as directly"
        if paths
        else f"no sample replayed: {' '.join(decl.methods)} requests are not safe to send twice"
    )
    result = GateResult("pass_through", not differing, summary, rows=differing)
    publish_gate_results([result], stage.name, run.spec.name)
    if differing:
        raise GateError("pass_through", result.summary, result)
    return {"percent_new": split.percent_new, "samples": len(paths)}


def gateway_upstream(run: RouteRun) -> Upstream:
    """The gateway as the comparator's fetch sees an upstream."""
    return Upstream(address=run.gateway.url.removeprefix("http://"))


def run_dark_launch(run: RouteRun, stage: RouteStage) -> dict[str, Any]:
    """Live requests mirrored by a gateway that can (nginx), else sampled or logged GETs replayed;
    either way compared Diffy-style and judged by the stage's mismatch gate."""
    assert isinstance(stage, DarkLaunchStage)
    if isinstance(run.gateway, MirroringGateway):
        dark = mirrored_dark_launch(run, run.gateway, stage)
    else:
        paths = dark_launch_paths(run, stage)
        ignore = frozenset(run.spec.ignore_fields)
        dark = dark_launch(run.spec.old, run.spec.new, paths, run.spec.gateway.key_header, ignore=ignore)
    results = judge(RouteWindow(stage.route, dark=dark), stage.gates)
    finish_gates(run, stage, results, rollback=False)
    figures = {"compared": dark.compared, "mismatches": len(dark.mismatches)}
    return figures if dark.mirrored is None else {**figures, "mirrored": dark.mirrored}


def mirrored_dark_launch(run: RouteRun, gateway: MirroringGateway, stage: DarkLaunchStage) -> DarkLaunchReport:
    """The gateway mirrors the route's live safe requests to a comparator run for the stage until
    ``stage.samples`` were compared or ``dark_launch_seconds`` passed; the mirror stops either way."""
    spec = run.spec
    comparator = MirrorComparator(
        spec.old, spec.new, spec.gateway.key_header, limit=stage.samples, ignore=frozenset(spec.ignore_fields)
    )
    try:
        gateway.mirror(stage.route, comparator.address)
        try:
            report = comparator.wait(spec.dark_launch_seconds)
        finally:
            gateway.mirror(stage.route, None)
    finally:
        comparator.close()
    return replace(report, mirrored=comparator.received)


def dark_launch_paths(run: RouteRun, stage: DarkLaunchStage) -> list[str]:
    """The route's declared samples, else the GET paths the gateway logged for it, else its prefix
    (the pass-through's own sample), cycled up to ``samples``."""
    decl = run.spec.route(stage.route)
    logged = dict.fromkeys(h.path for h in run.log.since(0.0, backend_name(stage.route)) if h.method == "GET")
    seen = list(decl.samples) or list(logged) or [decl.prefix]
    return [seen[i % len(seen)] for i in range(stage.samples)]


def run_canary_step(run: RouteRun, stage: RouteStage) -> dict[str, Any]:
    """Set the share, then watch the gates for the soak; any blocking failure rolls back at once."""
    assert isinstance(stage, RouteCanaryStep)
    backend = backend_name(stage.route)
    before = run.log.since(time.monotonic() - 60, backend)
    old_p99 = side_stats(before, "old").p99_ms
    if old_p99 is not None:
        run.baseline_old_p99_ms[stage.route] = old_p99
    started = time.monotonic()
    split = shift(run, stage.route, stage.percent, stage.name)
    deadline = started + stage.soak_seconds
    watch = run.spec.canary.watch_seconds
    while True:
        time.sleep(max(0.0, min(watch, deadline - time.monotonic())))
        if run.lease is not None:
            run.lease.ensure()  # an operator's rollback stops the soak at the next interval
        window = RouteWindow(
            stage.route,
            tuple(run.log.since(started, backend)),
            min_requests=run.spec.canary.min_requests,
            baseline_old_p99_ms=run.baseline_old_p99_ms.get(stage.route),
            latency_floor_ms=run.spec.canary.latency_floor_ms,
        )
        final = time.monotonic() >= deadline
        if final:
            window = replace(window, dark=replay_step(run, window))
        results = judge(window, stage.gates)
        failed = [r for r in results if r.blocking and not r.passed and (final or r.metrics.get("judged"))]
        if failed or final:
            finish_gates(run, stage, results, rollback=True)
            replayed = window.dark.compared if window.dark else 0
            return {"percent_new": split.percent_new, "requests": len(window.hits), "replayed": replayed}


def replay_step(run: RouteRun, window: RouteWindow) -> DarkLaunchReport | None:
    """At a canary step's end, for a safe route with a mismatch gate: the GETs users sent during the
    step, replayed Diffy-style (old twice, new once), up to ``canary.replays``."""
    decl = run.spec.route(window.route)
    if not decl.safe or all(g.name != "mismatch_rate" for g in run.spec.gates):
        return None
    paths = list(dict.fromkeys(h.path for h in window.hits if h.method == "GET"))[: run.spec.canary.replays]
    ignore = frozenset(run.spec.ignore_fields)
    return dark_launch(run.spec.old, run.spec.new, paths, run.spec.gateway.key_header, ignore=ignore)


def finish_gates(run: RouteRun, stage: RouteStage, results: list[GateResult], *, rollback: bool) -> None:
    """Publish the results; on a blocking failure, roll the route back first (when asked), then raise."""
    publish_gate_results(results, stage.name, run.spec.name)
    failed = [r for r in results if r.blocking and not r.passed]
    if not failed:
        return
    if rollback:
        why = f"gate {failed[0].gate} failed at {stage.name}: {failed[0].summary}"
        seconds = rollback_route(run.spec.name, run.store, run.gateway, stage.route, why, run.actor)
        failed[0].metrics["rollback_seconds"] = seconds
    raise GateError(failed[0].gate, failed[0].summary, failed[0])


def rollback_route(move: str, store: ControlStore, gateway: Gateway, route: str, reason: str, actor: str) -> float:
    """Every request of the route back on the old upstream (one runtime command), audited;
    returns how long the flip took."""
    started = time.perf_counter()
    split = gateway.set_split(route, 0)
    seconds = time.perf_counter() - started  # the gateway's flip; the flag follows
    set_route_flag(store.engine, move, route, 0, actor, reason)
    store.audit(
        move,
        actor,
        "route_rollback",
        {"route": route, "reason": reason, "seconds": seconds, "percent_new": split.percent_new},
    )
    return seconds


def rollback_routes(
    spec: RouteMoveSpec,
    store: ControlStore,
    gateway: Gateway,
    reason: str,
    actor: str = "operator",
    on_cancelled: Callable[[list[Any]], None] | None = None,
) -> dict[str, float]:
    """The operator's rollback: revoke the move's lease and cancel its pending approvals in one
    transaction (a running move stops before its next flip, and undoes a flip it raced;
    ``on_cancelled`` gets the cancelled requests, to wake their pauses), then every route not yet
    retired back on the old upstream.
    Returns each route's flip time in seconds; a retired route is named and left as it is."""
    from shiftover.approvals import cancel_pending

    with store.engine.begin() as conn:
        revoke_lease(conn, spec.name)
        cancelled = cancel_pending(conn, spec.name, actor)
    if cancelled and on_cancelled is not None:
        on_cancelled(cancelled)
    flipped: dict[str, float] = {}
    for r in spec.routes:
        if gateway.split(r.name).old_present:
            flipped[r.name] = rollback_route(spec.name, store, gateway, r.name, reason, actor)
        else:
            store.audit(spec.name, actor, "route_rollback_refused", {"route": r.name, "why": "old upstream retired"})
    return flipped


def run_retire_old(run: RouteRun, stage: RouteStage) -> dict[str, Any]:
    split = run.gateway.retire_old(stage.route)
    publish_split(run, stage.name)
    return {"old_present": split.old_present, "percent_new": split.percent_new}


def finished(
    work: Callable[[RouteRun, Any], dict[str, Any]], precheck: Callable[[RouteRun, Any], None] | None = None
) -> StageRunner[RouteRun]:
    """A route stage's work as a stage runner: it either finishes (its figures recorded with it) or
    raises; ``precheck`` refuses before the stage does anything."""
    return StageRunner(lambda run, stage: Outcome(True, stage.does, work(run, stage)), precheck=precheck)


ROUTE_RUNNERS: Mapping[type[RouteStage], StageRunner[RouteRun]] = {
    WaitForTableStage: finished(run_wait_for_table),
    PassThroughStage: finished(run_pass_through, require_upstreams),
    DarkLaunchStage: finished(run_dark_launch),
    RouteCanaryStep: finished(run_canary_step),
    RetireOldStage: finished(run_retire_old),
}
