"""``shiftover gateway SPEC --dir D``: the route move's gateway run as a service, in the foreground,
on the spec's ``gateway.listen``; the flows attach to it through ``D`` (as the ``route-move``
deployment's ``gateway_dir``). Both drivers, real HAProxy and nginx: it answers on the chosen port
with every route on the old upstream, a driver attached through the directory moves a route, a
second gateway on the same directory is refused, SIGTERM stops it and frees the port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shiftover.errors import SpecError
from shiftover.routes.drivers import attach_gateway
from shiftover.routes.haproxy import free_port
from shiftover.routes.spec import parse_route_spec

from .conftest import require_haproxy, require_nginx, route_spec, side_of

SHIFTOVER = str(Path(sys.executable).parent / "shiftover")


def started(spec_path: Path, workdir: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [SHIFTOVER, "gateway", str(spec_path), "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the command's one line once the gateway answers
    assert "listening on" in line, line + (process.stderr.read() if process.poll() is not None else "")
    return process


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("driver", ["haproxy", "nginx"])
def test_the_gateway_command_serves_on_its_port_until_sigterm(driver: str, upstreams, tmp_path: Path) -> None:
    require_haproxy() if driver == "haproxy" else require_nginx()
    old, new = upstreams
    port = free_port()
    spec = route_spec(old, new, gateway={"driver": driver, "listen": f"0.0.0.0:{port}"})
    spec_path, workdir = tmp_path / "routes.yaml", tmp_path / "gw"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    process = started(spec_path, workdir)
    try:
        gw = attach_gateway(spec, workdir)  # what the route-move flow does with gateway_dir
        assert gw.port == port and gw.url == f"http://127.0.0.1:{port}"
        assert {side_of(gw, f"u{i}") for i in range(10)} == {"old"}
        gw.set_split("orders_reads", 100)
        assert {side_of(gw, f"u{i}") for i in range(10)} == {"new"}

        again = subprocess.run(
            [SHIFTOVER, "gateway", str(spec_path), "--dir", str(workdir)], capture_output=True, text=True, timeout=60
        )
        assert again.returncode != 0 and "already runs from" in again.stderr + again.stdout
        assert side_of(gw, "u1") == "new"  # the refused second start touched nothing
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "gateway stopped" in out
    deadline = time.monotonic() + 5
    while not refused(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refused(port)


def test_a_bad_listen_address_is_refused_naming_the_field(upstreams) -> None:
    old, new = upstreams
    data = route_spec(old, new).model_dump(mode="json")
    for bad in ("0.0.0.0:99999", "0.0.0.0", "host name:80", "[::]:80"):
        data["gateway"]["listen"] = bad
        with pytest.raises(SpecError) as caught:
            parse_route_spec(data)
        assert "gateway.listen" in str(caught.value), (bad, caught.value)
