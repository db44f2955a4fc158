"""The nginx driver: a rendered nginx.conf in the gateway's own prefix directory, nginx as a child
process, and every change (a split, a retirement, the dark launch's mirror) a re-render, ``nginx -t``
and a graceful reload (``nginx -s reload`` on this prefix's pid file, never the system nginx's).

Each declared route is a prefix ``location``; a ``map`` on the method says whether the request moves,
and ``split_clients`` on the user's key (a header, else a cookie) picks its side. ``split_clients``
hashes the key (MurmurHash2) into one of 10,000 buckets and lists ``new`` first, so the users on the
new side at 10 % are still on it at 50 %: a user never flips back as the share rises. During the
dark launch the route's location ``mirror``s each request to an internal location that forwards GET
and HEAD only (never a write) to Shiftover's comparator (``routes/mirror.py``), with short timeouts:
nginx ends a kept-alive connection's request only once its mirror subrequest ended, so the
comparator answers at once and replays later.

A reload returns once the old workers stopped accepting (their title says "shutting down") and a new
worker runs, so every request accepted after ``set_split`` returns sees the new split.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftover.errors import GatewayError
from shiftover.routes.gateway import Split
from shiftover.routes.haproxy import RouteConfig, _end_with_parent, listen_on, reachable, weights_for
from shiftover.routes.spec import GatewaySpec, RouteMoveSpec, backend_name

STATE_MARK = "# shiftover-state "  # the config's first line: port and splits, read back by attach_nginx


def key_variable(gateway: GatewaySpec) -> str:
    """nginx's variable for the key header (``X-User`` -> ``$http_x_user``)."""
    return "$http_" + gateway.key_header.lower().replace("-", "_")


def render_key(gateway: GatewaySpec) -> list[str]:
    """``$shiftover_key``: the key header, else the key cookie when the spec names one."""
    header = key_variable(gateway)
    if gateway.key_cookie is None:
        return [f"    map {header} $shiftover_key {{ default {header}; }}"]
    return [f'    map {header} $shiftover_key {{ "" $cookie_{gateway.key_cookie}; default {header}; }}']


def render_route_maps(cfg: RouteConfig) -> list[str]:
    """The route's side: ``split_clients`` on the key for the moved methods, old for the rest."""
    b = backend_name(cfg.decl.name)
    if cfg.new_weight == 0:
        buckets = "* old;"
    elif cfg.old_weight == 0 or not cfg.old_present:
        buckets = "* new;"
    else:
        buckets = f"{cfg.new_weight}% new; * old;"
    methods = " ".join(f"{m} 1;" for m in cfg.decl.methods)
    return [
        f'    split_clients "$shiftover_key" ${b}_split {{ {buckets} }}',
        f"    map $request_method ${b}_moves {{ {methods} default 0; }}",
        f"    map ${b}_moves ${b}_backend {{ 1 {b}; default monolith; }}",
        f'    map "${b}_moves${b}_split" ${b}_side {{ 1new new; 1old old; default old; }}',
    ]


def render_locations(cfg: RouteConfig, mirror: str | None) -> list[str]:
    b = backend_name(cfg.decl.name)
    prefix = cfg.decl.prefix.rstrip("/")
    body = [f"set $shiftover_backend ${b}_backend;", f"set $shiftover_side ${b}_side;"]
    if mirror is not None:
        body += [f"mirror /_shiftover_mirror/{cfg.decl.name};", "mirror_request_body off;"]
    body.append("proxy_pass http://shiftover_$shiftover_side;")
    inner = " ".join(body)
    places = [f"location = {prefix} {{ {inner} }}"] if prefix else []
    places.append(f"location {prefix}/ {{ {inner} }}")
    out = [f"        {p}" for p in places]
    if mirror is not None:
        out += [
            f"        location = /_shiftover_mirror/{cfg.decl.name} {{",
            "            internal;",
            "            if ($shiftover_safe = 0) { return 204; }",  # writes are never mirrored
            "            proxy_pass http://shiftover_comparator$request_uri;",
            f"            proxy_set_header X-Shiftover-Route {cfg.decl.name};",
            "            proxy_set_header X-Shiftover-Method $request_method;",
            # a location's own proxy_set_header drops the server's: keep the comparator connections alive
            '            proxy_set_header Connection "";',
            "            proxy_pass_request_body off;",
            '            proxy_set_header Content-Length "";',
            "            proxy_connect_timeout 100ms;",
            "            proxy_send_timeout 200ms;",
            "            proxy_read_timeout 200ms;",
            "        }",
        ]
    return out


def render_config(
    spec: RouteMoveSpec,
    routes: Sequence[RouteConfig],
    *,
    port: int,
    workdir: Path,
    log_socket: Path | None,
    mirrors: dict[str, str],
    host: str = "127.0.0.1",
) -> str:
    """nginx.conf for ``routes`` listening on ``host``:``port``, everything it writes under ``workdir``.

    ``mirrors``: route -> ``host:port`` of the comparator its safe requests are mirrored to."""
    state = {
        "host": host,
        "port": port,
        "routes": {
            r.decl.name: {"old": r.old_weight, "new": r.new_weight, "old_present": r.old_present} for r in routes
        },
        "mirrors": mirrors,
        "log_socket": str(log_socket) if log_socket else None,
    }
    lines = [STATE_MARK + json.dumps(state, sort_keys=True), "worker_processes 1;", f"pid {workdir}/nginx.pid;"]
    if os.geteuid() == 0:
        # workers keep the starter's user: they must reach its private workdir (the log socket, temp dirs)
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name};")
    lines += [f"error_log {workdir}/error.log warn;", "events { worker_connections 1024; }", "http {"]
    lines += [
        f"    {kind}_temp_path {workdir}/tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]
    lines += [
        "    access_log off;",
        "    log_format shiftover '$shiftover_backend $shiftover_side $status $upstream_response_time "
        "$request_method $request_uri';",
        # a graceful reload closes the old workers' idle kept-alive client connections, and a client
        # that does not retry (http.client) would see that as a failed request: one request per connection
        "    keepalive_timeout 0;",
        f"    upstream shiftover_old {{ server {spec.old.address}; keepalive 16; }}",
        f"    upstream shiftover_new {{ server {spec.new.address}; keepalive 16; }}",
    ]
    for comparator in sorted(set(mirrors.values()))[:1]:
        lines.append(f"    upstream shiftover_comparator {{ server {comparator}; keepalive 8; }}")
    lines.append("    map $request_method $shiftover_safe { GET 1; HEAD 1; default 0; }")
    lines += render_key(spec.gateway)
    for r in routes:
        lines += render_route_maps(r)
    lines += ["    server {", f"        listen {host}:{port};"]
    if log_socket is not None:
        lines.append(f"        access_log syslog:server=unix:{log_socket},nohostname,tag=shiftover shiftover;")
    lines += [
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        set $shiftover_backend monolith;",
        "        set $shiftover_side old;",
    ]
    if not any(r.decl.prefix.rstrip("/") == "" for r in routes):
        lines.append("        location / { proxy_pass http://shiftover_old; }")
    for r in routes:
        lines += render_locations(r, mirrors.get(r.decl.name))
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


@dataclass
class NginxGateway:
    """A running nginx for one route move. Use ``start_nginx``; ``stop`` ends it."""

    spec: RouteMoveSpec
    workdir: Path
    port: int
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    log_socket: Path | None = None
    mirrors: dict[str, str] = field(default_factory=dict)
    binary: str = "nginx"
    process: subprocess.Popen[bytes] | None = None
    reload_timeout: float = 5.0
    host: str = "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "nginx.pid"

    @property
    def url(self) -> str:
        return f"http://{reachable(self.host)}:{self.port}"

    def set_split(self, route: str, percent_new: float) -> Split:
        cfg = self.routes[route]
        old, new = weights_for(percent_new)
        if not cfg.old_present and old:
            raise GatewayError(f"set_split {route} {percent_new:g}", "the old upstream was retired from this route")
        before = (cfg.old_weight, cfg.new_weight)
        cfg.old_weight, cfg.new_weight = old, new
        try:
            self.apply()
        except GatewayError:
            cfg.old_weight, cfg.new_weight = before
            raise
        return self.split(route)

    def split(self, route: str) -> Split:
        """The split of the loaded config (each change returns only once nginx runs it)."""
        saved = read_state(self.config_path)["routes"][route]
        return Split(route, int(saved["old"]), int(saved["new"]), old_present=bool(saved["old_present"]))

    def retire_old(self, route: str) -> Split:
        """The old upstream leaves the route's side map: every moved request goes to new."""
        cfg = self.routes[route]
        if cfg.new_weight == 0:
            raise GatewayError(f"retire_old {route}", "the new upstream takes no traffic yet")
        if cfg.old_present:
            cfg.old_present, cfg.old_weight = False, 0
            try:
                self.apply()
            except GatewayError:
                cfg.old_present = True
                raise
        return self.split(route)

    def mirror(self, route: str, target: str | None) -> None:
        """Mirror the route's safe requests to ``target`` (``host:port``), or stop (None)."""
        if route not in self.routes:
            raise GatewayError(f"mirror {route}", "no such route")
        before = dict(self.mirrors)
        wanted = {k: v for k, v in before.items() if k != route} | ({route: target} if target else {})
        if len(set(wanted.values())) > 1:
            raise GatewayError(f"mirror {route} {target}", "one comparator at a time")
        self.mirrors = wanted
        try:
            self.apply()
        except GatewayError:
            self.mirrors = before
            raise

    def render(self) -> str:
        return render_config(
            self.spec,
            list(self.routes.values()),
            port=self.port,
            workdir=self.workdir,
            log_socket=self.log_socket,
            mirrors=self.mirrors,
            host=self.host,
        )

    def apply(self) -> None:
        """Check the new config as a candidate file, move it into place, reload gracefully."""
        candidate = self.write_candidate()
        self.check(candidate)
        os.replace(candidate, self.config_path)
        self.reload()

    def write_candidate(self) -> Path:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        candidate = self.config_path.with_suffix(".candidate")
        candidate.write_text(self.render())
        return candidate

    def check(self, config: Path) -> None:
        cmd = [self.binary, "-t", "-q", "-p", str(self.workdir), "-c", str(config)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise GatewayError(" ".join(cmd), done.stdout + done.stderr)

    def reload(self) -> None:
        """``nginx -s reload`` on this prefix's pid file, then wait until the old workers stopped
        accepting and a new one runs."""
        master = self.master_pid()
        old = set(worker_pids(master))
        cmd = [self.binary, "-p", str(self.workdir), "-c", str(self.config_path), "-s", "reload"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise GatewayError(" ".join(cmd), done.stdout + done.stderr)
        deadline = time.monotonic() + self.reload_timeout
        while not reloaded(master, old):
            if time.monotonic() > deadline:
                raise GatewayError(" ".join(cmd), f"no new worker after {self.reload_timeout:g}s: {self.error_tail()}")
            time.sleep(0.002)

    def master_pid(self) -> int:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            raise GatewayError(f"read {self.pid_path}", "no nginx master pid: is the gateway running?") from None

    def error_tail(self) -> str:
        try:
            return "".join((self.workdir / "error.log").read_text().splitlines(keepends=True)[-5:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: in-flight requests finish
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_pids(master: int) -> list[int]:
    """The master's children (``/proc/<pid>/task/<pid>/children``)."""
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reloaded(master: int, old: set[int]) -> bool:
    """A worker not in ``old`` runs, and every old worker is gone or shutting down."""
    now = worker_pids(master)
    fresh = [p for p in now if p not in old and "worker process" in title(p) and "shutting down" not in title(p)]
    lingering = [p for p in now if p in old and "shutting down" not in title(p) and title(p)]
    return bool(fresh) and not lingering


def read_state(config: Path) -> dict[str, Any]:
    """The state line ``render_config`` put first in the config file."""
    try:
        first = config.read_text().split("\n", 1)[0]
        if not first.startswith(STATE_MARK):
            raise ValueError("no state line")
        state: dict[str, Any] = json.loads(first.removeprefix(STATE_MARK))
        return state
    except (OSError, ValueError) as exc:
        raise GatewayError(f"read {config}", f"no gateway config there ({exc.__class__.__name__})") from None


def start_nginx(
    spec: RouteMoveSpec,
    *,
    workdir: Path | None = None,
    log_socket: Path | None = None,
    binary: str = "nginx",
    ready_timeout: float = 5.0,
) -> NginxGateway:
    """Render the config (every route on the old upstream), check it (``nginx -t``), start nginx in
    the foreground (``daemon off``) as a child with its own prefix on a free localhost port, and wait
    for its worker to answer."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="shiftover-nginx-"))
    routes = {r.name: RouteConfig(r) for r in spec.routes}
    host, port = listen_on(spec)
    gw = NginxGateway(spec, workdir, port, routes, log_socket, binary=binary, host=host)
    candidate = gw.write_candidate()
    gw.check(candidate)
    os.replace(candidate, gw.config_path)
    launch(gw, ready_timeout)
    return gw


def launch(gw: NginxGateway, ready_timeout: float = 5.0) -> None:
    """Run the config file as a child that ends with this process; returns once a worker runs."""
    errors = gw.workdir / "nginx.stderr"
    cmd = [gw.binary, "-p", str(gw.workdir), "-c", str(gw.config_path), "-g", "daemon off;"]
    with errors.open("wb") as err_file:
        gw.process = subprocess.Popen(cmd, stdout=err_file, stderr=err_file, preexec_fn=_end_with_parent)
    deadline = time.monotonic() + ready_timeout
    while not any("worker process" in title(p) for p in worker_pids(gw.process.pid)):
        if gw.process.poll() is not None:
            raise GatewayError("nginx start", errors.read_text() + gw.error_tail())
        if time.monotonic() > deadline:
            gw.stop()
            raise GatewayError("nginx start", f"no worker after {ready_timeout:g}s")
        time.sleep(0.01)


def attach_nginx(spec: RouteMoveSpec, workdir: Path, *, log_socket: Path | None = None) -> NginxGateway:
    """The nginx already running from ``workdir``, its splits read back from the config it loaded.
    ``GatewayError`` naming ``workdir`` when no gateway config is there or no nginx master runs."""
    state = read_state(workdir / "nginx.conf")
    saved = state["routes"]
    assert isinstance(saved, dict)
    routes = {}
    for decl in spec.routes:
        row = saved.get(decl.name, {})
        routes[decl.name] = RouteConfig(
            decl, int(row.get("old", 100)), int(row.get("new", 0)), bool(row.get("old_present", True))
        )
    mirrors = state.get("mirrors") or {}
    assert isinstance(mirrors, dict)
    saved_log = state.get("log_socket")
    if log_socket is None and saved_log:
        log_socket = Path(saved_log)  # a rollback's re-render keeps the running move's access log
    host = str(state.get("host", "127.0.0.1"))
    gw = NginxGateway(spec, workdir, int(str(state["port"])), routes, log_socket, dict(mirrors), host=host)
    master = gw.master_pid()
    if not Path(f"/proc/{master}").exists():
        raise GatewayError(f"attach {workdir}", f"no nginx runs as pid {master}")
    if log_socket is not None:
        gw.apply()  # workers reconnect their access log to this run's (re-bound) socket
    return gw
