"""One run's context: the spec loaded, the migration opened and its lease taken once, at the edge.

Every stage runner gets the same ``RunContext``; nothing below it reloads the spec, re-checks the
databases or re-registers the migration.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from shiftover.connect import redact
from shiftover.control.lease import Lease, acquire_lease
from shiftover.control.store import ControlStore, open_store
from shiftover.errors import ControlStoreError
from shiftover.migration import Migration, resume_migration
from shiftover.phases import Phase
from shiftover.plan import MigrationState, Plan, build_plan, read_state
from shiftover.spec import MigrationSpec, load_spec, stored_form


@dataclass(frozen=True)
class RunOptions:
    """What a run's parameters may change (each ``None`` means: the spec's value)."""

    soak_seconds: float | None = None
    watch_seconds: float = 5.0  # how often the traffic gates are checked during a soak
    approval_timeout_seconds: float | None = None
    poll_interval_seconds: int = 10
    auto_approve: bool = False
    suspend: bool | None = None  # wait for approvals with suspend_flow_run (default: deployed runs)
    flag_ttl_seconds: float = 1.0
    retention_seconds: float | None = None
    export_parquet: str | None = None
    time_budget_seconds: float | None = None
    concurrency: int | None = None
    since: datetime | None = None  # validate: only rows changed since then
    keys_from_queue: bool = False  # validate: only keys the reconciliation queue touched
    lease_wait_seconds: float = 0.0
    distributed: int | None = None  # backfill: this many workers claiming segments (spec: backfill.distributed)
    # the run's own spec path and control URL as given (a reference stays one): what a
    # distributed backfill hands its child runs (set by ``run_plan``)
    spec_path: str | None = None
    control_url: str | None = None


class RunSubject(Protocol):
    """What a run works on: a table move's ``Migration`` or a schema change's ``SchemaChange``."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ControlStore: ...


S = TypeVar("S", bound=RunSubject)


@dataclass
class LeasedRun(Generic[S]):
    """What every stage runner gets: the subject, its plan and this run's lease (the evaluator and
    the approvals read only these members, and ``migration.spec.approvals``)."""

    migration: S
    plan: Plan
    lease: Lease
    holder: str
    actor: str
    options: RunOptions

    @property
    def store(self) -> ControlStore:
        return self.migration.store

    @property
    def name(self) -> str:
        return self.migration.name

    def state(self) -> MigrationState:
        return read_state(self.store, self.name)

    def advance(self, phase: Phase, reason: str) -> None:
        """Enter ``phase`` (fenced by the lease) unless already there."""
        self.store.advance_to(self.name, phase, self.actor, reason, lease=self.lease)


@dataclass
class RunContext(LeasedRun[Migration]):
    """A table move's run: ``migration`` is replaced when a stage changes what the databases hold
    (the dual-write stage creating the new table)."""


@dataclass(frozen=True)
class Opened:
    """What the edge knows before it takes the lease."""

    spec: MigrationSpec
    store: ControlStore
    plan: Plan
    state: MigrationState


def open_plan(spec: MigrationSpec | str, control_url: str, *, register: bool = True) -> Opened:
    """Open the control store, read the migration's state (``spec``: loaded or a path).

    Only a run that starts with the plan's first stage registers a migration the store does not
    know (``register``); any other (a later stage's flow, a rollback) is refused: pointed at
    another store than the migration's earlier runs used, it would otherwise start a new
    migration there, silently."""
    spec = load_spec(spec) if isinstance(spec, str) else spec
    store = open_store(control_url)
    if not register and not store.has_migration(spec.name):
        first = build_plan(spec).stages[0]
        raise ControlStoreError(
            f"no migration {spec.name!r} in the control store {redact(control_url)}: its first stage "
            f"({first.name}, run by the '{first.flow}' or 'migrate' flow) registers it. Check that control_url "
            "is the store its earlier runs used"
        )
    store.register(spec.name, stored_form(spec))
    return Opened(spec, store, build_plan(spec), read_state(store, spec.name))


@contextmanager
def leased(store: ControlStore, name: str, options: RunOptions) -> Iterator[tuple[Lease, str]]:
    """This run's lease on ``name`` and its holder name, the heartbeat running; released at the end."""
    holder = run_holder()
    lease = acquire_lease(store.engine, name, holder, wait_seconds=options.lease_wait_seconds)
    lease.start_heartbeat()
    try:
        yield lease, holder
    finally:
        lease.release()


@contextmanager
def hold(opened: Opened, actor: str, options: RunOptions) -> Iterator[RunContext]:
    """Take the migration's lease for this run, open the databases, and release it at the end."""
    with leased(opened.store, opened.spec.name, options) as (lease, holder):
        phase = read_state(opened.store, opened.spec.name).phase
        migration = resume_migration(opened.spec, opened.store, phase)
        yield RunContext(migration, opened.plan, lease, holder, actor, options)


def run_holder() -> str:
    """This run's name as a lease holder: the Prefect flow run's id (a suspended run that resumes
    keeps it), or a fresh id outside Prefect."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return f"flow-run/{run_id}" if run_id else f"process/{uuid.uuid4()}"
