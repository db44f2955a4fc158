"""One run's context: the spec loaded, the migration opened and its lease taken once, at the edge.

Every stage runner gets the same ``RunContext``; nothing below it reloads the spec, re-checks the
databases or re-registers the migration. ``StagedRun`` is what the one evaluator
(``flows/evaluate.py``) and the approvals (``flows/approval.py``) read of any run: a table move's
``RunContext``, a schema change's ``LeasedRun[SchemaChange]`` and a route move's ``RouteRun``
(``flows/routes.py``) each answer it, so none of them poses as another.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from shiftover.connect import redact
from shiftover.control.lease import Lease, acquire_lease
from shiftover.control.store import ControlStore, open_store, utcnow
from shiftover.errors import ControlStoreError
from shiftover.flags.routing import WriteMode
from shiftover.migration import Migration, resume_migration
from shiftover.phases import Phase
from shiftover.plan import MigrationState, Plan, build_plan, read_state
from shiftover.spec import ApprovalSpec, MigrationSpec, load_spec, stored_form

log = logging.getLogger(__name__)
# The audit action of a table move's rehearsal (``flows/dual_write.py``): the findings of a refusal
# before the first stage changed anything, which a refused first run removes with its registration.
REHEARSAL = "rehearsal"


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


class HasApprovals(Protocol):
    """A spec as the approvals read it: who may approve, their keys, the time-out."""

    @property
    def name(self) -> str: ...

    @property
    def approvals(self) -> ApprovalSpec: ...


class RunSubject(Protocol):
    """What a run works on: a table move's ``Migration``, a schema change's ``SchemaChange`` or a
    route move's ``RouteMove``."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ControlStore: ...

    @property
    def spec(self) -> HasApprovals: ...


class StagedRun(Protocol):
    """What the one evaluator and the approvals read of a run, whatever it moves.

    The plan's stages answer ``done(state)`` against what ``state()`` returns (a table's phase and
    recorded stages, a route's audited stages since its last rollback); the run records a stage done
    (``complete``, fenced by its lease), runs gates the stage declares ``before``/``after`` (``gate``),
    and writes the approval form's text (``approval_summary``)."""

    @property
    def migration(self) -> RunSubject: ...

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ControlStore: ...

    @property
    def plan(self) -> Any: ...  # iterable stages with ``stops_after(index, name)``

    @property
    def lease(self) -> Lease | None: ...

    @property
    def holder(self) -> str: ...

    @property
    def actor(self) -> str: ...

    @property
    def options(self) -> RunOptions: ...

    def state(self) -> Any: ...

    def prepare(self, stage: Any) -> None: ...

    def prepare_walk(self, flows: Collection[str] | None, stop_after: str | None) -> None: ...

    def gate(self, stage: Any) -> list[str]: ...

    def approval_summary(self, stage: Any, gate_lines: list[str]) -> str: ...

    def complete(self, stage: Any, reason: str, detail: dict[str, Any]) -> None: ...

    def position(self) -> dict[str, Any]: ...


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

    def prepare(self, stage: Any) -> None:
        """Nothing to get ready before a stage (a table move preloads Great Expectations)."""

    def prepare_walk(self, flows: Collection[str] | None, stop_after: str | None) -> None:
        """Nothing to get ready before the walk (a table move may start the Great Expectations import)."""

    def gate(self, stage: Any) -> list[str]:
        """A schema change's stages declare no evaluator gates (its validation is its own stage)."""
        if stage.gates:
            raise NotImplementedError(f"stage {stage.name!r} declares gates, which only a table move runs")
        return []

    def complete(self, stage: Any, reason: str, detail: dict[str, Any]) -> None:
        """The stage recorded done and its phase entered, in one transaction fenced by the lease."""
        self.store.complete_stage(self.name, stage.name, stage.reaches, self.actor, reason, lease=self.lease)

    def position(self) -> dict[str, Any]:
        return {"phase": self.state().phase}

    def approval_summary(self, stage: Any, gate_lines: list[str]) -> str:
        """The markdown on the approval form: what will happen, its undo, the state now, the gates."""
        state = self.state()
        routing = state.routing
        lines = [
            f"## Approve `{stage.name}` for migration `{self.name}`",
            "",
            f"- **What happens:** {stage.does}.",
            f"- **Why a person approves:** {stage.approval.why if stage.approval else '-'}.",
            f"- **Undo:** {stage.inverse.describe() if stage.inverse else 'this step cannot be undone'}.",
            (
                f"- **Now:** phase `{state.phase}` (epoch {state.epoch}), writes `{routing.writes}`, "
                f"reads {routing.reads_percent:g}% on the new store."
            ),
            "",
            "### Gates",
            *(gate_lines or ["- (no gates at this step)"]),
            "",
            f"Type **{self.name}** in *Confirm Name* to approve. A rollback before you answer cancels this request.",
        ]
        if not stage.reversible:
            lines.insert(2, "**This step is IRREVERSIBLE.**\n")
        if routing.writes is WriteMode.DUAL_NEW_PRIMARY:
            lines.insert(2, "**Note:** the new store is already the source of truth.\n")
        return "\n".join(lines)


@dataclass
class RunContext(LeasedRun[Migration]):
    """A table move's run: ``migration`` is replaced when a stage changes what the databases hold
    (the dual-write stage creating the new table)."""

    def prepare(self, stage: Any) -> None:
        preload_expectations(self, stage)

    def prepare_walk(self, flows: Collection[str] | None, stop_after: str | None) -> None:
        preload_for_walk(self, flows, stop_after)

    def gate(self, stage: Any) -> list[str]:
        """Run the stage's declared gates (a blocking failure raises ``GateError``); one line each."""
        from shiftover.tasks.gates import check_gates

        if not stage.gates or stage.gate_section is None:
            return []
        results = check_gates(self.migration, stage.gate_section, stage.gates, actor=self.actor)
        return [f"- {r.gate}: {'passed' if r.passed else 'FAILED'} — {r.summary}" for r in results]


def declares_expectations(ctx: RunContext, stage: Any) -> bool:
    """Whether the stage has an expectations gate with expectations the spec declares (the default
    suite runs in SQL and needs no Great Expectations)."""
    from shiftover.checks.data import stage_expectations

    if stage.gate_section is None or all(g.name != "expectations" for g in stage.gates):
        return False
    return bool(stage_expectations(ctx.migration, stage.gate_section))


def preload_expectations(ctx: RunContext, stage: Any) -> None:
    """Start importing Great Expectations (3 s or more) in the background when the stage declares
    expectations (a no-op when ``preload_for_walk`` started it already)."""
    from shiftover.expectations import preload_great_expectations

    if declares_expectations(ctx, stage):
        preload_great_expectations()


def preload_for_walk(ctx: RunContext, flows: Collection[str] | None, stop_after: str | None) -> None:
    """Start the Great Expectations import when the walk begins if a stage it will reach declares
    expectations, so the import overlaps the earlier stages (the dual-write stage's wait for flag
    caches, the backfill) instead of the validate stage's own gates: measured in the demo (100k
    SQLite rows, live application), started at the validate stage it still held the expectations
    gate about 3 s, its thread slowed by the checksum scan and the application's threads.
    A run that stops before such a stage (``stop_after``, another stage flow) does not import it."""
    from shiftover.expectations import preload_great_expectations

    state = ctx.state()
    for i, stage in enumerate(ctx.plan):
        if (flows is None or stage.flow in flows) and not stage.done(state) and declares_expectations(ctx, stage):
            preload_great_expectations()
            return
        if stop_after is not None and ctx.plan.stops_after(i, stop_after):
            return


@dataclass(frozen=True)
class Opened:
    """What the edge knows before it takes the lease."""

    spec: MigrationSpec
    store: ControlStore
    plan: Plan
    state: MigrationState
    created: bool = False  # this run registered the migration (its first run)


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
    registration = store.enroll(spec.name, stored_form(spec))
    return Opened(spec, store, build_plan(spec), read_state(store, spec.name), registration.created)


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


def phase_entered(store: ControlStore, name: str, phase: Phase) -> datetime:
    """When the migration last entered ``phase`` (from the audit log)."""
    return [h for h in store.history(name) if h.phase == phase][-1].at


def retention_wait(run: LeasedRun[Any], since: Phase, seconds: float, kept: str) -> str | None:
    """Why a drop must wait: what is ``kept`` stays for ``seconds`` after the run entered ``since``.
    None when the period is over; otherwise the due time is audited (``retention``) and the reason
    returned, and the evaluator stops there (a later run, scheduled or by hand, drops it)."""
    due = phase_entered(run.store, run.name, since) + timedelta(seconds=seconds)
    if utcnow() >= due:
        return None
    run.store.audit(run.name, run.actor, "retention", {"drop_due": due.isoformat()})
    return f"{kept} kept until {due.isoformat(timespec='seconds')}; run again after that to drop it"


@contextmanager
def forgotten_if_refused(
    store: ControlStore, name: str, lease: Lease, created: bool, *, evidence: Collection[str] = ()
) -> Iterator[None]:
    """A first run (``created``: it registered ``name``) that raises before its first stage changed
    anything removes the migration again, under its lease (``ControlStore.forget_refused`` says what
    counts as unchanged): bad input leaves no ``planned`` name behind. The refusal is what the caller
    sees, even when the removal fails (logged)."""
    try:
        yield
    except Exception:
        if created:
            try:
                if store.forget_refused(name, lease, evidence=evidence):
                    log.info("%s was refused before it changed anything: its registration is removed", name)
            except Exception as exc:  # the refusal matters more than the tidying up
                log.warning("could not remove the registration of refused %s: %s", name, exc)
        raise


@contextmanager
def hold(opened: Opened, actor: str, options: RunOptions) -> Iterator[RunContext]:
    """Take the migration's lease for this run, open the databases, and release it at the end."""
    with leased(opened.store, opened.spec.name, options) as (lease, holder):
        # a first run whose spec the databases refute (no such table or key) leaves no migration
        with forgotten_if_refused(opened.store, opened.spec.name, lease, opened.created):
            phase = read_state(opened.store, opened.spec.name).phase
            migration = resume_migration(opened.spec, opened.store, phase)
        yield RunContext(migration, opened.plan, lease, holder, actor, options)


def run_holder() -> str:
    """This run's name as a lease holder: the Prefect flow run's id (a suspended run that resumes
    keeps it), or a fresh id outside Prefect."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return f"flow-run/{run_id}" if run_id else f"process/{uuid.uuid4()}"
