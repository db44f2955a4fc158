"""A migration's state as the plan's ``done`` predicates read it, from the control store."""

from __future__ import annotations

import sqlalchemy as sa

from shiftover.control import schema
from shiftover.control.store import ControlStore
from shiftover.errors import ControlStoreError
from shiftover.flags.routing import read_routing
from shiftover.phases import Phase
from shiftover.plan.build import build_plan
from shiftover.plan.stages import STARTED, MigrationState
from shiftover.spec import MigrationSpec


def read_state(store: ControlStore, migration: str) -> MigrationState:
    """Phase, epoch, routing and the stages recorded done since the last rollback: three queries."""
    m, a = schema.migrations, schema.audit_log
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(m.c.phase, m.c.epoch).where(m.c.name == migration)).first()
        if row is None:
            raise ControlStoreError(f"no migration named {migration!r} in control store {store.url}")
        since = _last_rollback_id(conn, migration)
        entries = conn.execute(
            sa.select(a.c.action, a.c.detail).where(
                a.c.migration == migration, a.c.action.in_(("stage", STARTED)), a.c.id > since
            )
        ).all()
    completed = frozenset(str(e.detail["stage"]) for e in entries if e.action == "stage")
    started = frozenset(str(e.detail["stage"]) for e in entries if e.action == STARTED)
    routing = read_routing(store.engine, migration)
    return MigrationState(Phase(row.phase), int(row.epoch), routing, completed, started)


def nothing_left(spec: MigrationSpec, store: ControlStore) -> str | None:
    """Why a run of ``spec`` would do nothing (finished, or rolled back), or None: read without
    taking the lease or touching the databases, so a re-run of a finished migration is instant."""
    if not store.has_migration(spec.name):
        return None
    state = read_state(store, spec.name)
    if state.phase is Phase.ROLLED_BACK:
        return f"{spec.name} is rolled back; nothing was run. To start again from dual-write: --restart"
    if build_plan(spec).finished(state):
        return f"nothing left to do: every stage of {spec.name} is done (phase {state.phase})"
    return None


def _last_rollback_id(conn: sa.Connection, migration: str) -> int:
    """The audit id of the last entry that restarts the plan (a rollback), 0 when none."""
    a = schema.audit_log
    query = sa.select(sa.func.max(a.c.id)).where(a.c.migration == migration, a.c.action == "rollback")
    return int(conn.execute(query).scalar() or 0)
