"""The route move's Prefect flows: ``route-move`` walks the plan against a running gateway (its
approvals a pause with the table stages' typed form), ``route-rollback`` flips every route back
to the old upstream at once. Thin: the work is in ``flows/routes.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from shiftover.control.lease import Lease
from shiftover.control.store import ControlStore
from shiftover.flows.context import RunOptions
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.routes import Approver, evaluate_routes, open_route_move, rollback_routes
from shiftover.routes.spec import RouteMoveSpec
from shiftover.routes.traffic import AccessLog


@dataclass(frozen=True)
class RouteMove:
    """A route move as the approval reads a migration: its name, control store and spec."""

    spec: RouteMoveSpec
    store: ControlStore

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class RouteApprovalContext:
    """The members of a run's context that ``obtain_approval`` reads (as ``SchemaRunContext`` is
    for a schema change), for a route move."""

    migration: RouteMove
    lease: Lease
    holder: str
    actor: str
    options: RunOptions


def pause_approver(
    spec: RouteMoveSpec, store: ControlStore, lease: Lease, timeout_seconds: float, poll_interval_seconds: int
) -> Approver:
    """Approvals exactly as the table stages ask them (``obtain_approval``): a request in the control
    store at the lease's epoch (a rollback cancels it), the typed form (name to confirm, approver
    from the spec's list) on a Prefect pause of the calling flow run, the answer checked again; a
    refused answer asks again. A pause, never a suspension: the move holds the gateway's access log."""
    from shiftover.flows.approval import obtain_approval

    options = RunOptions(
        approval_timeout_seconds=timeout_seconds, poll_interval_seconds=poll_interval_seconds, suspend=False
    )
    ctx = RouteApprovalContext(RouteMove(spec, store), lease, lease.holder, "route-move", options)
    return lambda stage, summary: obtain_approval(ctx, stage.name, summary).approver


@flow(name="route-move")
def route_move(
    spec_path: str,
    control_url: str,
    gateway_dir: str,
    approval_timeout_seconds: float = 3600,
    poll_interval_seconds: int = 10,
) -> dict[str, Any]:
    """Move the spec's routes through the HAProxy running from ``gateway_dir``."""

    from shiftover.control.lease import acquire_lease
    from shiftover.control.store import open_store
    from shiftover.flows.context import run_holder
    from shiftover.routes.haproxy import attach_haproxy
    from shiftover.routes.spec import load_route_spec

    admit_control_url(control_url)
    spec = load_route_spec(spec_path)
    store = open_store(control_url)
    store.register(spec.name, spec.model_dump(mode="json"), "route-move")
    lease = acquire_lease(store.engine, spec.name, run_holder())  # one run moves these routes at a time
    lease.start_heartbeat()
    workdir = Path(gateway_dir)
    log_path = workdir / "log.sock"
    log_path.unlink(missing_ok=True)  # the gateway logs to this path; this run reads it
    log = AccessLog(log_path)
    try:
        gateway = attach_haproxy(spec, workdir, log_socket=log_path)
        approver = pause_approver(spec, store, lease, approval_timeout_seconds, poll_interval_seconds)
        run = open_route_move(spec, store, gateway, log, approver, actor="route-move", lease=lease)
        return evaluate_routes(run)
    finally:
        log.close()
        lease.release()


@flow(name="route-rollback")
def route_rollback(
    spec_path: str, control_url: str, gateway_dir: str, reason: str = "operator rollback"
) -> dict[str, float]:
    """Every route of the move back on the old upstream, now; never waits for the move's lease."""
    from shiftover.control.store import open_store
    from shiftover.flows.rollback import cancel_paused_runs
    from shiftover.routes.haproxy import attach_haproxy
    from shiftover.routes.spec import load_route_spec

    admit_control_url(control_url)
    spec = load_route_spec(spec_path)
    gateway = attach_haproxy(spec, Path(gateway_dir))
    wake = lambda requests: cancel_paused_runs(requests, spec.name, reason)  # noqa: E731
    return rollback_routes(spec, open_store(control_url), gateway, reason, "route-rollback", wake)
