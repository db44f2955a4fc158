"""One unfinished schema change per table, as pgroll allows one active migration per schema.

Two changes on one table at once undo each other's ground: each installs triggers and drops
columns, and B's contract dropping a column A's triggers still write fails every write of the
application. So when a change begins, before any DDL, it claims its table: the table's identity as
the server names it (``EngineDialect.table_identity``: one table under two URL spellings has one
identity) goes in the audit log. A change whose table is claimed by another change that is neither
rolled back nor decommissioned is refused, naming it, with nothing written. The check and the claim
run under the table's DDL lock, so two changes starting at once cannot both pass.
"""

from __future__ import annotations

import json
from typing import Any

from shiftover.control.lease import Lease
from shiftover.control.store import ControlStore
from shiftover.engines import dialect_for
from shiftover.phases import Phase
from shiftover.schema.columns import Target
from shiftover.schema.errors import ConcurrentChangeError

CLAIM = "schema_table"  # the audit action holding a change's table identity
ENDED = (Phase.ROLLED_BACK, Phase.DECOMMISSIONED)


def table_identity(target: Target) -> Any:
    """The server's name for ``target``'s table, as JSON values (None when it does not exist)."""
    with target.engine.connect() as conn:
        found = dialect_for(target.engine).table_identity(conn, target.schema, target.table)
    return json.loads(json.dumps(found))


def changes_holding(store: ControlStore, identity: Any, *, besides: str) -> list[tuple[str, Phase]]:
    """Unfinished changes other than ``besides`` whose last claim is ``identity``."""
    holding = []
    for m in store.migrations():
        if m["name"] == besides or Phase(m["phase"]) in ENDED:
            continue
        claims = store.audit_entries(m["name"], action=CLAIM)
        if claims and claims[-1]["detail"]["identity"] == identity:
            holding.append((str(m["name"]), Phase(m["phase"])))
    return holding


def claim_table(store: ControlStore, name: str, actor: str, target: Target, lease: Lease) -> None:
    """Refuse when another unfinished change holds the table, else claim it for ``name``."""
    with target.ddl_mutex():
        identity = table_identity(target)
        holding = changes_holding(store, identity, besides=name)
        if holding:
            raise ConcurrentChangeError(target.qualified, holding)
        store.audit(name, actor, CLAIM, {"identity": identity}, lease=lease)
