"""The route move's Prefect flows: ``route-move`` walks the plan on the one evaluator against a
running gateway (its approvals the table stages': a request in the control store, the typed form on
a pause, signed when the spec lists keys), ``route-rollback`` flips every route back to the old
upstream at once. Thin: the work is in ``flows/routes.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow

from shiftover.flows.approval import require_auto_permission
from shiftover.flows.context import RunOptions, forgotten_if_refused
from shiftover.flows.credentials import admit_control_url
from shiftover.flows.routes import evaluate_routes, open_route_move, rollback_routes
from shiftover.routes.traffic import AccessLog


def gateway_path(gateway_dir: str) -> Path:
    """The gateway's directory by its real path: a config re-rendered through another spelling
    would name its files twice (nginx, reloaded with a new spelling of its pid file, writes the new
    one and deletes the old one: the same file)."""
    return Path(os.path.realpath(gateway_dir))


@flow(name="route-move")
def route_move(
    spec_path: str,
    control_url: str,
    gateway_dir: str,
    approval_timeout_seconds: float = 3600,
    poll_interval_seconds: int = 10,
    auto_approve: bool = False,
) -> dict[str, Any]:
    """Move the spec's routes through the gateway (``gateway.driver``) running from ``gateway_dir``.
    Approvals pause this run (never suspend it: the move holds the gateway's access log);
    ``auto_approve`` answers them itself only where the spec allows it (no approvers, or
    ``approvals.auto``), as a table run does."""

    from shiftover.control.lease import acquire_lease
    from shiftover.control.store import open_store
    from shiftover.flows.context import run_holder
    from shiftover.routes.claim import claim_gateway
    from shiftover.routes.drivers import attach_gateway
    from shiftover.routes.spec import load_route_spec
    from shiftover.schema.claim import CLAIM

    admit_control_url(control_url)
    spec = load_route_spec(spec_path)
    require_auto_permission(spec, auto_approve)  # refused before anything is opened
    store = open_store(control_url)
    registration = store.enroll(spec.name, spec.model_dump(mode="json", by_alias=True), "route-move")
    lease = acquire_lease(store.engine, spec.name, run_holder())  # one run moves these routes at a time
    lease.start_heartbeat()
    workdir = gateway_path(gateway_dir)
    log_path = workdir / "log.sock"
    log: AccessLog | None = None
    options = RunOptions(
        approval_timeout_seconds=approval_timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        auto_approve=auto_approve,
        suspend=False,
    )
    try:
        # a first run refused before its first stage changed anything (no gateway running from
        # gateway_dir, a table the route waits for not far enough, another move holding the
        # gateway) leaves no migration behind, its own gateway claim included
        with forgotten_if_refused(store, spec.name, lease, registration.created, evidence=(CLAIM,)):
            claim_gateway(store, spec, "route-move", workdir, lease)  # before the log, the config, a flag
            log_path.unlink(missing_ok=True)  # the gateway logs to this path; this run reads it
            log = AccessLog(log_path)  # bound before attaching: nginx's workers reconnect to it then
            gateway = attach_gateway(spec, workdir, log_socket=log_path)
            run = open_route_move(spec, store, gateway, log, actor="route-move", lease=lease, options=options)
            return evaluate_routes(run)
    finally:
        if log is not None:
            log.close()
        lease.release()


@flow(name="route-rollback")
def route_rollback(
    spec_path: str, control_url: str, gateway_dir: str, reason: str = "operator rollback"
) -> dict[str, float]:
    """Every route of the move back on the old upstream, now; never waits for the move's lease."""
    from shiftover.control.store import open_store
    from shiftover.flows.rollback import cancel_paused_runs
    from shiftover.routes.drivers import attach_gateway
    from shiftover.routes.spec import load_route_spec

    admit_control_url(control_url)
    spec = load_route_spec(spec_path)
    gateway = attach_gateway(spec, gateway_path(gateway_dir))
    wake = lambda requests: cancel_paused_runs(requests, spec.name, reason)  # noqa: E731
    return rollback_routes(spec, open_store(control_url), gateway, reason, "route-rollback", wake)
