"""The HAProxy driver: a rendered haproxy.cfg, HAProxy as a child process, and weights changed
through its runtime API (an admin-level unix socket), never by a reload.

One frontend routes each declared route (path prefix and methods) to its own backend holding two
servers, ``old`` and ``new``; everything else goes to the old upstream. A backend balances on
the user's key header with ``hash-type consistent``: the user keeps its side as the new share
rises (consistent hashing moves keys only towards the server whose weight grew), and HAProxy
accepts any weight only with consistent hashing. Weights are relative (0-256): a step raises the
gaining side before lowering the other, in one socket command line, so 0/0 (503) never shows.
Runtime changes are lost on restart, so every change rewrites the config file too (no reload).
``bench/gateway.py`` measures what that buys: from the flip to every following request on the
other side (README: 11-61 ms over four runs on a loaded machine, 0 failed requests across switches).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shiftover.errors import GatewayError
from shiftover.routes.gateway import Split
from shiftover.routes.spec import RouteDecl, RouteMoveSpec, backend_name

SCALE = 100  # weights are percentages


@dataclass
class RouteConfig:
    """What the config file says about one route now (kept in step with every runtime change)."""

    decl: RouteDecl
    old_weight: int = SCALE
    new_weight: int = 0
    old_present: bool = True


def render_config(
    spec: RouteMoveSpec,
    routes: Sequence[RouteConfig],
    *,
    port: int,
    admin_socket: Path,
    log_socket: Path | None,
    host: str = "127.0.0.1",
) -> str:
    """haproxy.cfg for ``routes``, listening on ``host``:``port``."""
    key = spec.gateway.key_header
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    maxconn 4096",
    ]
    if log_socket is not None:
        lines.append(f"    log {log_socket} len 2048 format raw local0")
    lines += [
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    retries 2",
        "    option redispatch",
    ]
    if log_socket is not None:
        # backend, server, status, Tr (server response time, ms), method, path
        lines += ["    log global", '    log-format "%b %s %ST %Tr %HM %HP"']
    lines += ["", "frontend web", f"    bind {host}:{port}"]
    for r in routes:
        b = backend_name(r.decl.name)
        prefix = r.decl.prefix.rstrip("/")
        lines.append(f"    acl {b}_path path {prefix}")  # two lines of one ACL name are ORed
        lines.append(f"    acl {b}_path path_beg {prefix}/")
        lines.append(f"    acl {b}_method method {' '.join(r.decl.methods)}")
        lines.append(f"    use_backend {b} if {b}_path {b}_method")
    lines += ["    default_backend monolith", "", "backend monolith", f"    server old {spec.old.address}"]
    for r in routes:
        lines += ["", f"backend {backend_name(r.decl.name)}", f"    balance hdr({key})", "    hash-type consistent"]
        if r.old_present:
            lines.append(f"    server old {spec.old.address} weight {r.old_weight}")
        lines.append(f"    server new {spec.new.address} weight {r.new_weight}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen_on(spec: RouteMoveSpec) -> tuple[str, int]:
    """Where a started gateway listens: the spec's ``gateway.listen``, else 127.0.0.1 on a free port."""
    return spec.gateway.listen_address() or ("127.0.0.1", free_port())


def reachable(host: str) -> str:
    """The address this process reaches a gateway listening on ``host`` at (any address: loopback)."""
    return "127.0.0.1" if host == "0.0.0.0" else host


def runtime_command(admin_socket: Path, command: str, *, timeout: float = 2.0) -> str:
    """Send one line to the runtime API and return its reply (the socket closes after it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(admin_socket))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def weights_for(percent_new: float) -> tuple[int, int]:
    """(old, new) weights for a share; 100 % new is old 0, 0 % new is new 0."""
    new = round(SCALE * percent_new / 100)
    return SCALE - new, new


@dataclass
class HAProxyGateway:
    """A running HAProxy for one route move. Use ``start_haproxy``; ``stop`` ends the child."""

    spec: RouteMoveSpec
    workdir: Path
    port: int
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    log_socket: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def admin_socket(self) -> Path:
        return self.workdir / "admin.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def url(self) -> str:
        return f"http://{reachable(self.host)}:{self.port}"

    def command(self, line: str) -> str:
        """A state-changing command: any reply but an empty line is an error."""
        reply = runtime_command(self.admin_socket, line)
        if reply.strip():
            raise GatewayError(line, reply)
        return reply

    def set_split(self, route: str, percent_new: float) -> Split:
        cfg = self.routes[route]
        old, new = weights_for(percent_new)
        b = backend_name(route)
        if not cfg.old_present and old:
            raise GatewayError(f"set_split {route} {percent_new:g}", "the old upstream was retired from this route")
        raise_new_first = new >= cfg.new_weight
        steps = [f"set server {b}/new weight {new}"]
        if cfg.old_present:
            steps.append(f"set server {b}/old weight {old}")
        if not raise_new_first:
            steps.reverse()
        self.command("; ".join(steps))  # one connection: applied back to back, the gaining side first
        cfg.old_weight, cfg.new_weight = old, new
        self.write_config()
        return self.split(route)

    def split(self, route: str) -> Split:
        b = backend_name(route)
        new = self._weight(f"{b}/new")
        present = self.routes[route].old_present
        old = self._weight(f"{b}/old") if present else 0
        return Split(route, old, new, old_present=present)

    def _weight(self, server: str) -> int:
        reply = runtime_command(self.admin_socket, f"get weight {server}")
        try:  # "100 (initial 100)"
            return int(reply.split()[0])
        except (IndexError, ValueError):
            raise GatewayError(f"get weight {server}", reply) from None

    def retire_old(self, route: str) -> Split:
        """Maintenance, then ``del server``: the old server leaves the running backend, and the
        rewritten config no longer names it (a restart keeps it out)."""
        cfg = self.routes[route]
        if cfg.new_weight == 0:
            raise GatewayError(f"retire_old {route}", "the new upstream takes no traffic yet")
        b = backend_name(route)
        if cfg.old_present:
            self.command(f"set server {b}/old state maint")
            self._delete_when_idle(f"{b}/old")
            cfg.old_present, cfg.old_weight = False, 0
            self.write_config()
        return self.split(route)

    def _delete_when_idle(self, server: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # refused while the server still has connections in flight
            reply = runtime_command(self.admin_socket, f"del server {server}")
            if "deleted" in reply.lower() or not reply.strip():
                return
            if time.monotonic() > deadline:
                raise GatewayError(f"del server {server}", reply)
            time.sleep(0.05)

    def servers(self) -> list[str]:
        """``backend/server`` of every server the running HAProxy holds (``show servers state``)."""
        rows = runtime_command(self.admin_socket, "show servers state").splitlines()
        out = []
        for row in rows[1:]:
            parts = row.split()
            if len(parts) > 3 and not row.startswith("#"):
                out.append(f"{parts[1]}/{parts[3]}")
        return out

    def write_config(self) -> None:
        text = render_config(
            self.spec,
            list(self.routes.values()),
            port=self.port,
            admin_socket=self.admin_socket,
            log_socket=self.log_socket,
            host=self.host,
        )
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def restart(self, binary: str = "haproxy") -> None:
        """Stop and start again from the config file, which every runtime change rewrote: the
        splits and retired servers survive (a machine reboot, an upgrade)."""
        self.stop()
        launch(self, binary)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_haproxy(
    spec: RouteMoveSpec,
    *,
    workdir: Path | None = None,
    log_socket: Path | None = None,
    binary: str = "haproxy",
    ready_timeout: float = 5.0,
) -> HAProxyGateway:
    """Render the config (every route on the old upstream), check it (``haproxy -c``), start HAProxy
    in the foreground as a child process on a free localhost port and wait for its runtime socket."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="shiftover-haproxy-"))
    routes = {r.name: RouteConfig(r) for r in spec.routes}
    host, port = listen_on(spec)
    gw = HAProxyGateway(spec, workdir, port, routes, log_socket, host=host)
    gw.write_config()
    launch(gw, binary, ready_timeout)
    return gw


_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)  # loaded here: never dlopen in a forked child
except OSError:
    _LIBC = None


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux), so a
    killed test run or benchmark leaves no haproxy serving on its port."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(gw: HAProxyGateway, binary: str = "haproxy", ready_timeout: float = 5.0) -> None:
    """Check the config file as written and run it as a child that ends with this process; returns
    once the runtime socket answers."""
    check = subprocess.run([binary, "-c", "-q", "-f", str(gw.config_path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise GatewayError(f"haproxy -c -f {gw.config_path}", check.stdout + check.stderr)
    errors = gw.workdir / "haproxy.stderr"
    with errors.open("wb") as err_file:  # a file, not a pipe nobody reads
        process = subprocess.Popen(
            [binary, "-db", "-f", str(gw.config_path)], stdout=err_file, stderr=err_file, preexec_fn=_end_with_parent
        )
    gw.process = process
    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            raise GatewayError("haproxy start", errors.read_text())
        try:
            if "Name: HAProxy" in runtime_command(gw.admin_socket, "show info", timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            gw.stop()
            raise GatewayError("haproxy start", f"no runtime socket after {ready_timeout:g}s")
        time.sleep(0.05)


def logged_to(config: str) -> Path | None:
    """The access-log socket a rendered config's ``global`` section logs to; None when it logs nowhere."""
    for line in config.split("\n\n", 1)[0].splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "log":
            return Path(words[1])
    return None


def attach_haproxy(spec: RouteMoveSpec, workdir: Path, *, log_socket: Path | None = None) -> HAProxyGateway:
    """The gateway already running from ``workdir`` (its config and admin socket), its routes' weights
    read back from the runtime API: a flow run drives a long-lived gateway it did not start.
    ``GatewayError`` naming ``workdir`` when no gateway config is there or no haproxy answers."""
    try:
        text = (workdir / "haproxy.cfg").read_text()
        host, port_text = text.split("\n    bind ", 1)[1].split()[0].rsplit(":", 1)
        port = int(port_text)
    except (OSError, IndexError, ValueError) as exc:
        raise GatewayError(f"attach {workdir}", f"no gateway config there ({exc.__class__.__name__})") from None
    if log_socket is None:
        log_socket = logged_to(text)  # a rollback's rewrite keeps the running move's access log
    routes = {r.name: RouteConfig(r) for r in spec.routes}
    gw = HAProxyGateway(spec, workdir, port, routes, log_socket, host=host)
    try:
        present = set(gw.servers())
    except OSError as exc:
        raise GatewayError(f"attach {workdir}", f"no haproxy answers on {gw.admin_socket}: {exc}") from None
    for name, cfg in gw.routes.items():
        b = backend_name(name)
        cfg.old_present = f"{b}/old" in present
        cfg.new_weight = gw._weight(f"{b}/new")
        cfg.old_weight = gw._weight(f"{b}/old") if cfg.old_present else 0
    return gw
