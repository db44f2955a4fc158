"""One unfinished migration per table, as pgroll allows one active migration per schema.

Two schema changes on one table at once undo each other's ground: each installs triggers and drops
columns, and B's contract dropping a column A's triggers still write fails every write of the
application. A schema change and a table move are no better: a column added to the old table after
the move planned its mapping is never copied, one dropped breaks its dual-writes, and the move's
decommission drops the table the change works on. So when a migration begins, before it writes
anything, it claims its tables: each table's identity as the server names it
(``EngineDialect.table_identity``: one table under two URL spellings has one identity) goes in the
audit log (a schema change's table; a table move's old and new ones). A migration whose table is
claimed by another that is neither rolled back nor decommissioned is refused, naming it, with
nothing written. The check and the claim run under the tables' DDL locks, so two migrations
starting at once cannot both pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from shiftover.control.lease import Lease
from shiftover.control.store import ControlStore
from shiftover.engines import dialect_for
from shiftover.phases import Phase
from shiftover.schema.columns import Target
from shiftover.schema.errors import ConcurrentChangeError

CLAIM = "schema_table"  # the audit action holding a migration's claims (tables; a route move's gateway)
ENDED = (Phase.ROLLED_BACK, Phase.DECOMMISSIONED)

# (store, a migrations() row) -> whether that migration holds nothing any more
Ended = Callable[[ControlStore, Mapping[str, Any]], bool]


def phase_ended(store: ControlStore, migration: Mapping[str, Any]) -> bool:
    """A table migration lets its claims go when it is rolled back or decommissioned."""
    return Phase(migration["phase"]) in ENDED


def table_identity(target: Target) -> Any:
    """The server's name for ``target``'s table, as JSON values (None when it does not exist)."""
    with target.engine.connect() as conn:
        found = dialect_for(target.engine).table_identity(conn, target.schema, target.table)
    return json.loads(json.dumps(found))


def claimed(detail: dict[str, Any]) -> list[Any]:
    """The table identities a claim entry holds: a schema change's one, a table move's two."""
    return list(detail["identities"]) if "identities" in detail else [detail["identity"]]


def changes_holding(
    store: ControlStore, identity: Any, *, besides: str, ended: Ended = phase_ended
) -> list[tuple[str, Phase]]:
    """Unfinished migrations (of any kind) other than ``besides`` whose last claim holds ``identity``;
    ``ended`` says which migrations hold nothing any more (by default: by phase)."""
    holding = []
    for m in store.migrations():
        if m["name"] == besides or ended(store, m):
            continue
        claims = store.audit_entries(m["name"], action=CLAIM)
        if claims and identity in claimed(claims[-1]["detail"]):
            holding.append((str(m["name"]), Phase(m["phase"])))
    return holding


def claim_tables(store: ControlStore, name: str, actor: str, targets: Sequence[Target], lease: Lease) -> None:
    """Refuse when another unfinished migration holds any of the tables, else claim them all for
    ``name``: a schema change claims its table, a table move its old and new ones (each that exists).
    The tables' DDL locks are taken in one order (by server and name) so two claimers never wait for
    each other in a cycle."""
    ordered = sorted(targets, key=lambda t: (str(t.engine.url), t.schema or "", t.table))
    with ExitStack() as locks:
        for target in ordered:
            locks.enter_context(target.ddl_mutex())
        found = [(t, table_identity(t)) for t in ordered]
        identities = [identity for _, identity in found if identity is not None]
        for target, identity in found:
            holding = [] if identity is None else changes_holding(store, identity, besides=name)
            if holding:
                raise ConcurrentChangeError(target.qualified, holding)
        store.audit(name, actor, CLAIM, {"identities": identities}, lease=lease)


def claim_table(store: ControlStore, name: str, actor: str, target: Target, lease: Lease) -> None:
    """Refuse when another unfinished migration holds the table, else claim it for ``name``."""
    claim_tables(store, name, actor, [target], lease)
