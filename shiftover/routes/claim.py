"""One unfinished route move per gateway, as one unfinished migration per table (``schema/claim.py``).

A gateway's config is rendered from one move's routes (``haproxy.render_config``, nginx's the
same), so a second move attaching the same directory rewrites it with its own routes only: the
first move's routes fall back to the default backend mid-canary, and the second run re-binds the
access-log socket the first one reads. So a route move's run claims its gateway first, before it
touches the log socket, attaches the gateway or writes a flag. The identity is the machine's
name and the directory's real path (a directory is local; two spellings of one directory are one
gateway), held in the audit action tables are claimed with (``CLAIM``), found by the same
``changes_holding``. A move holds its gateway until each of its routes was rolled back since the
move's last claim; another move meanwhile is refused, naming it, before it changes anything. A
finished move keeps it: the gateway's config is then what serves its routes from the new upstream,
and another move's config, rendered from that move's routes alone, would send them back to the old
one (more routes are moved on that gateway by the same move, its spec listing them too). The
check and the claim run under an exclusive flock on a file in the directory, so two moves
starting at once cannot both pass.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shiftover.control.file_lock import exclusive_file_lock
from shiftover.control.lease import Lease
from shiftover.control.store import ControlStore
from shiftover.errors import GatewayError, GatewayHeldError
from shiftover.routes.spec import RouteMoveSpec
from shiftover.schema.claim import CLAIM, changes_holding, phase_ended

LOCK_FILE = ".shiftover-claim.lock"


def gateway_identity(workdir: Path) -> dict[str, str]:
    """The gateway running from ``workdir``, as a claim names it: this machine and the real path."""
    return {"host": socket.gethostname(), "gateway": os.path.realpath(workdir)}


def route_move_ended(store: ControlStore, name: str) -> bool:
    """Whether every route a move's last claim names was rolled back since that claim, with no stage
    done after (a rollback restarts a route: a re-run claims again). A finished route does not end
    the hold: the gateway serves it."""
    entries = store.audit_entries(name)
    claims = [i for i, e in enumerate(entries) if e["action"] == CLAIM]
    routes: list[str] = entries[claims[-1]]["detail"].get("routes", []) if claims else []
    if not routes:
        return False  # not a route move's claim: its phase says
    rolled_back: dict[str, bool] = {}
    for entry in entries[claims[-1] + 1 :]:
        route = (entry["detail"] or {}).get("route")
        if entry["action"] in ("route_rollback", "route_stage"):
            rolled_back[str(route)] = entry["action"] == "route_rollback"
    return all(rolled_back.get(route, False) for route in routes)


def gateway_released(store: ControlStore, migration: Mapping[str, Any]) -> bool:
    return phase_ended(store, migration) or route_move_ended(store, str(migration["name"]))


@contextmanager
def gateway_mutex(workdir: Path) -> Iterator[None]:
    """An exclusive file lock in the gateway's directory (one file for every spelling of it)."""
    directory = Path(os.path.realpath(workdir))
    if not directory.is_dir():
        raise GatewayError(f"claim {workdir}", "no gateway directory there")
    with exclusive_file_lock(directory / LOCK_FILE):
        yield


def claim_gateway(
    store: ControlStore, spec: RouteMoveSpec, actor: str, workdir: Path, lease: Lease | None
) -> dict[str, str]:
    """Refuse (``GatewayHeldError``) when another unfinished route move holds the gateway running
    from ``workdir``, else claim it for ``spec``'s move (fenced by its ``lease``); its identity."""
    identity = gateway_identity(workdir)
    with gateway_mutex(workdir):
        holding = changes_holding(store, identity, besides=spec.name, ended=gateway_released)
        if holding:
            raise GatewayHeldError(identity["gateway"], identity["host"], holding)
        detail = {"identities": [identity], "routes": [r.name for r in spec.routes]}
        store.audit(spec.name, actor, CLAIM, detail, lease=lease)
    return identity
