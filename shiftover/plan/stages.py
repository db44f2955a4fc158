"""The typed stages of a migration plan.

Each stage declares, as data, the phase it reaches, its gates and when they run, whether a
person must approve it, when it counts as done, and its inverse: a flip of the routing flags,
nothing to undo, or ``None`` when it cannot be undone. The evaluator (``flows``) runs the stages
that are not done; the explainer, the rollback and the approval texts read the same objects, so
what is printed is what runs. No stage knows how it is executed: that lives with its flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from shiftover.flags.routing import Routing, WriteMode
from shiftover.phases import Phase, is_at_least
from shiftover.spec import GateSpec

GateTiming = Literal["after", "before", "within"]
# after: the evaluator runs the gates once the stage's work is done, before its phase is entered;
# before: ahead of the approval and the work (the approver sees the results);
# within: the stage's own work is gating (validation with repair, a canary soak).


@dataclass(frozen=True)
class MigrationState:
    """What the control store says now: the inputs of every ``done`` predicate."""

    phase: Phase
    epoch: int
    routing: Routing
    completed: frozenset[str] = frozenset()  # stages recorded done since the last rollback
    # irreversible stages whose work began since the last rollback (``STARTED``, written fenced by
    # the run's lease before the work): maybe half done, so no rollback may undo what came before
    started: frozenset[str] = frozenset()


STARTED = "irreversible_started"  # the audit action of ``MigrationState.started``


@dataclass(frozen=True)
class RoutingFlip:
    """An inverse that is a flip of routing flags: instant, through the flag store."""

    writes: WriteMode | None = None
    reads_percent: float | None = None
    shadow: bool | None = None
    drain_to_old_first: bool = False  # writes only the new store holds go to the old one first

    def describe(self) -> str:
        parts = []
        if self.drain_to_old_first:
            parts.append("queued writes copied new -> old first")
        if self.reads_percent is not None:
            parts.append(f"reads flag -> {self.reads_percent:g}%")
        if self.shadow is not None:
            parts.append(f"shadow flag -> {'on' if self.shadow else 'off'}")
        if self.writes is not None:
            parts.append(f"writes flag -> {self.writes}")
        return ", ".join(parts)


@dataclass(frozen=True)
class NothingToUndo:
    """An inverse with no effect: the stage changed nothing a rollback must take back."""

    why: str

    def describe(self) -> str:
        return f"nothing to undo ({self.why})"


@dataclass(frozen=True)
class SchemaUndo:
    """An inverse that changes a table's schema back (an expand/contract change before contract:
    sync triggers and new columns dropped, read/write flags back to the old columns)."""

    what: str

    def describe(self) -> str:
        return self.what


Inverse = RoutingFlip | NothingToUndo | SchemaUndo


@dataclass(frozen=True)
class ApprovalPolicy:
    """A person approves before the stage runs; ``why`` is shown on the form."""

    why: str


@dataclass(frozen=True)
class Stage:
    name: str
    reaches: Phase
    does: str
    inverse: Inverse | None  # None: irreversible
    gates: tuple[GateSpec, ...] = ()
    gate_section: str | None = None  # the spec's ``gates`` section the gates come from
    approval: ApprovalPolicy | None = None

    kind: ClassVar[str] = "stage"
    flow: ClassVar[str] = ""  # the stage flow (and deployment) that runs it alone
    gates_run: ClassVar[GateTiming] = "after"

    @property
    def reversible(self) -> bool:
        return self.inverse is not None

    @property
    def needs_approval(self) -> bool:
        return self.approval is not None

    def done(self, state: MigrationState) -> bool:
        """True when a run can skip this stage: recorded done since the last rollback, or a later phase."""
        return self.name in state.completed or is_at_least(state.phase, self.reaches)


@dataclass(frozen=True)
class DualWriteStage(Stage):
    kind: ClassVar[str] = "dual_write"
    flow: ClassVar[str] = "dual-write"
    create_target: bool = False


@dataclass(frozen=True)
class BackfillStage(Stage):
    kind: ClassVar[str] = "backfill"
    flow: ClassVar[str] = "backfill"


@dataclass(frozen=True)
class ValidateStage(Stage):
    kind: ClassVar[str] = "validate"
    flow: ClassVar[str] = "validate"
    gates_run: ClassVar[GateTiming] = "within"


@dataclass(frozen=True)
class ShadowReadsStage(Stage):
    kind: ClassVar[str] = "shadow_reads"
    flow: ClassVar[str] = "cutover"


@dataclass(frozen=True)
class CanaryStep(Stage):
    kind: ClassVar[str] = "canary_step"
    flow: ClassVar[str] = "cutover"
    gates_run: ClassVar[GateTiming] = "within"
    percent: float = 100.0
    soak_seconds: float = 0.0

    def done(self, state: MigrationState) -> bool:
        """Done once its gates passed (recorded), not when the flag merely moved: a run that
        died mid-soak judges the step again."""
        return self.name in state.completed or is_at_least(state.phase, Phase.READS_SWITCHED)


@dataclass(frozen=True)
class SwitchWritesStage(Stage):
    kind: ClassVar[str] = "switch_writes"
    flow: ClassVar[str] = "cutover"
    gates_run: ClassVar[GateTiming] = "before"


@dataclass(frozen=True)
class StopOldWritesStage(Stage):
    kind: ClassVar[str] = "stop_old_writes"
    flow: ClassVar[str] = "decommission"


@dataclass(frozen=True)
class ArchiveStage(Stage):
    kind: ClassVar[str] = "archive"
    flow: ClassVar[str] = "decommission"
    gates_run: ClassVar[GateTiming] = "before"
    archive_table: str = ""
    export_parquet: str | None = None


@dataclass(frozen=True)
class DropStage(Stage):
    kind: ClassVar[str] = "drop"
    flow: ClassVar[str] = "decommission"
    archive_table: str = ""
    retention_seconds: float = 0.0

    def done(self, state: MigrationState) -> bool:
        return state.phase is Phase.DECOMMISSIONED


STAGE_TYPES: tuple[type[Stage], ...] = (
    DualWriteStage,
    BackfillStage,
    ValidateStage,
    ShadowReadsStage,
    CanaryStep,
    SwitchWritesStage,
    StopOldWritesStage,
    ArchiveStage,
    DropStage,
)


@dataclass(frozen=True)
class Plan:
    """A migration's stages in the order they run, and what follows from them."""

    migration: str
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> Stage:
        return self.stages[index]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in the plan of {self.migration!r}")

    @property
    def flows(self) -> tuple[str, ...]:
        """The stage flows, in the order they first run."""
        return tuple(dict.fromkeys(s.flow for s in self.stages))

    @property
    def irreversible_phases(self) -> frozenset[Phase]:
        return frozenset(s.reaches for s in self.stages if not s.reversible)

    @property
    def approval_phases(self) -> frozenset[Phase]:
        return frozenset(s.reaches for s in self.stages if s.needs_approval)

    def pending(self, state: MigrationState) -> list[Stage]:
        return [s for s in self.stages if not s.done(state)]

    def finished(self, state: MigrationState) -> bool:
        return not self.pending(state)

    def check_stop_after(self, stop_after: str | None) -> None:
        """``ValueError`` unless ``stop_after`` names a stage or a stage flow of this plan."""
        names = [s.name for s in self.stages] + list(self.flows)
        if stop_after is not None and stop_after not in names:
            raise ValueError(f"stop_after={stop_after!r} is no stage or stage flow; use one of {', '.join(names)}")

    def stops_after(self, index: int, stop_after: str) -> bool:
        """True after the named stage, or after the last stage of the named flow."""
        stage = self.stages[index]
        if stage.name == stop_after:
            return True
        following = self.stages[index + 1] if index + 1 < len(self.stages) else None
        return stage.flow == stop_after and (following is None or following.flow != stop_after)

    def irreversibly_done(self, state: MigrationState) -> list[Stage]:
        """Stages that cannot be undone, done or begun: once there is one, rollback is impossible."""
        return [s for s in self.stages if not s.reversible and (s.done(state) or s.name in state.started)]

    def rollback_flip(self, *, keep_dual_write: bool = True) -> RoutingFlip:
        """Every reversible stage's inverse folded, newest stage first, into one flip.

        All of them, done or not: a stage that died half-way (reads moved, gates not yet judged)
        is undone too, and flips that change nothing are skipped when applied.
        ``keep_dual_write`` leaves dual-write on, so the new store stays in step."""
        writes: WriteMode | None = None
        reads: float | None = None
        shadow: bool | None = None
        drain = False
        for s in reversed(self.stages):  # undone newest first: the oldest stage's inverse has the last word
            flip = s.inverse
            if not isinstance(flip, RoutingFlip) or (isinstance(s, DualWriteStage) and keep_dual_write):
                continue
            writes = flip.writes if flip.writes is not None else writes
            reads = flip.reads_percent if flip.reads_percent is not None else reads
            shadow = flip.shadow if flip.shadow is not None else shadow
            drain = drain or flip.drain_to_old_first
        return RoutingFlip(writes=writes, reads_percent=reads, shadow=shadow, drain_to_old_first=drain)
