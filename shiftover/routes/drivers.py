"""The spec's ``gateway.driver`` to a running gateway: start one (tests, the demo, the benchmark) or
attach to the one running from a directory (a flow run)."""

from __future__ import annotations

from pathlib import Path

from shiftover.routes.haproxy import HAProxyGateway, attach_haproxy, start_haproxy
from shiftover.routes.nginx import NginxGateway, attach_nginx, start_nginx
from shiftover.routes.spec import RouteMoveSpec

RunningGateway = HAProxyGateway | NginxGateway


def start_gateway(
    spec: RouteMoveSpec, *, workdir: Path | None = None, log_socket: Path | None = None
) -> RunningGateway:
    if spec.gateway.driver == "nginx":
        return start_nginx(spec, workdir=workdir, log_socket=log_socket)
    return start_haproxy(spec, workdir=workdir, log_socket=log_socket)


def attach_gateway(spec: RouteMoveSpec, workdir: Path, *, log_socket: Path | None = None) -> RunningGateway:
    if spec.gateway.driver == "nginx":
        return attach_nginx(spec, workdir, log_socket=log_socket)
    return attach_haproxy(spec, workdir, log_socket=log_socket)
