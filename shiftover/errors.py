"""Shiftover's one exception tree. Every error carries its evidence and says what to do.

ShiftoverError
├── SpecError                 the spec file or its databases disagree (field, problem)
│   └── RehearsalError        the rehearsal found problems a run would meet (every finding)
├── CredentialError           a password inline where it would be kept, or a reference that does
│                             not resolve (the field or the reference, never the secret; problem)
├── ControlStoreError         the control store is unreachable or at an unknown version
│   └── UnknownMigrationError a flow that serves a started migration found none of that name (migration, store)
├── LeaseError                who may act on a migration
│   ├── LeaseHeldError        another run holds the migration (its run id, until when)
│   └── LeaseLostError        this run's lease was revoked or taken over: it stops
├── PhaseError                an illegal phase transition (from, to, allowed)
│   └── StageOrderError       a stage flow started before the stages it builds on
├── FlagError                 a flag write lost a version race or names an unknown flag
├── CopyError                 a backfill chunk failed (table, key range, cause)
│   └── TransientCopyError    a lost connection: retried with backoff
├── DiffError                 the diff cannot run as declared (column, fix)
├── GateError                 a blocking gate failed (the report)
├── ApprovalError             an approval was refused, malformed or timed out
│   ├── StaleApprovalError    the answer was given for an older state of the migration
│   └── SignatureError        an answer's signature is missing or does not verify (approver, problem)
├── RollbackRefusedError      a rollback would lose writes: names what is pending
├── CaptureError              trigger capture could not be installed or replayed
├── GatewayError              the gateway refused a command or would not start (command, reply)
│   └── GatewayHeldError      another unfinished route move holds the gateway (the gateway, its name and phase)
└── UnsupportedEngineError    a database other than PostgreSQL, MySQL/MariaDB or SQLite (name)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ShiftoverError(Exception):
    """Base of every error Shiftover raises on purpose."""


class SpecError(ShiftoverError):
    """A spec that cannot run: names the field at fault and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"spec field {field!r}: {problem}")


class RehearsalError(SpecError):
    """Sample rows pushed through the real mapping, transform and writer (then rolled back) met
    problems a run would meet; ``findings`` holds every one, each naming its spec field."""

    def __init__(self, findings: Sequence[Any]) -> None:
        self.findings = tuple(findings)
        self.field = ", ".join(dict.fromkeys(f.field for f in self.findings))
        self.problem = "\n".join(f"- {f}" for f in self.findings)
        ShiftoverError.__init__(
            self, f"the rehearsal found {len(self.findings)} problem(s); nothing was written:\n{self.problem}"
        )


class CredentialError(ShiftoverError):
    """A credential Shiftover will not keep or cannot find: ``field`` is the parameter at fault
    (``control_url``) or the reference that failed (``${ORDERS_OLD_URL}``), never a secret."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ControlStoreError(ShiftoverError):
    """The control store cannot be used."""


class UnknownMigrationError(ControlStoreError):
    """A flow that only serves a migration already under way (a worker, a drain, capture) found no
    migration of that name in the control store; it wrote nothing. ``store`` is the store's URL
    without its password; ``starts`` says what starts the migration."""

    def __init__(self, migration: str, store: str, needed_by: str, starts: str) -> None:
        self.migration = migration
        self.store = store
        self.needed_by = needed_by
        self.starts = starts
        super().__init__(
            f"no migration {migration!r} in the control store {store}: {needed_by} serves a migration "
            f"already started and starts none; nothing was written. {starts}. If it was started, check that "
            "control_url is the store its earlier runs used and that the spec's name is the migration's"
        )


class PhaseError(ShiftoverError):
    """A phase transition that the lifecycle does not allow."""

    def __init__(self, migration: str, current: str, wanted: str, allowed: list[str]) -> None:
        self.migration = migration
        self.current = current = str(current)
        self.wanted = wanted = str(wanted)
        self.allowed = allowed = [str(a) for a in allowed]
        super().__init__(
            f"migration {migration!r} is {current!r} and cannot go to {wanted!r}; "
            f"allowed next: {', '.join(allowed) or 'none'}"
        )


class LeaseError(ShiftoverError):
    """Who may act on a migration: one run at a time."""

    def __init__(self, migration: str, message: str) -> None:
        self.migration = migration
        super().__init__(message)


class LeaseHeldError(LeaseError):
    """Another run holds the migration; names it and when its lease runs out."""

    def __init__(self, migration: str, holder: str, expires_at: Any) -> None:
        self.holder = holder
        self.expires_at = expires_at
        until = expires_at.isoformat(timespec="seconds") if hasattr(expires_at, "isoformat") else str(expires_at)
        super().__init__(
            migration,
            f"migration {migration!r} is being run by {holder} (lease until {until}); "
            "wait for that run to end, cancel it, or retry with --wait",
        )


class LeaseLostError(LeaseError):
    """This run no longer holds the migration (a rollback or another run took over)."""


class SegmentLeaseLostError(LeaseError):
    """A backfill or diff worker no longer holds its segment (its lease expired and another worker took it)."""


class SegmentsLeasedError(LeaseError):
    """Workers of an earlier distributed run still hold segments: an in-process copy would copy them
    again beside them (rows stay right, counts do not), so it waits for them."""

    def __init__(self, migration: str, held: dict[int, tuple[str, Any]]) -> None:
        self.held = held
        latest = max(until for _, until in held.values())
        until = latest.isoformat(timespec="seconds") if hasattr(latest, "isoformat") else str(latest)
        holders = sorted({holder for holder, _ in held.values()})
        super().__init__(
            migration,
            f"segment(s) {sorted(held)} of {migration!r} are held by worker(s) {', '.join(holders)} of a "
            f"distributed backfill (leases until {until} at the latest): let them finish or stop them, and "
            "run again once their leases lapse; or run the backfill distributed again (backfill.distributed) "
            "so that its workers share the segments with them",
        )


class StageOrderError(PhaseError):
    """A stage flow started before the stages it builds on are done (nothing was run)."""

    def __init__(self, migration: str, current: str, stage: str, flow: str) -> None:
        self.migration, self.current, self.wanted, self.allowed = migration, str(current), stage, []
        ShiftoverError.__init__(
            self,
            f"migration {migration!r} is {str(current)!r}: stage {stage!r} is not done yet; "
            f"run the {flow!r} flow (or migrate) first; nothing was run",
        )


class FlagError(ShiftoverError):
    """A flag write was refused."""


class CopyError(ShiftoverError):
    """A backfill chunk failed; committed chunks stay committed."""

    def __init__(self, table: str, key_range: str, cause: str) -> None:
        self.table = table
        self.key_range = key_range
        self.cause = cause
        super().__init__(f"copy of {table} {key_range} failed: {cause}")


class TransientCopyError(CopyError):
    """A copy failure worth retrying (lost connection, deadlock, timeout)."""


class DiffError(ShiftoverError):
    """The diff cannot run as declared."""


class GateError(ShiftoverError):
    """A blocking gate failed; ``report`` holds what it found."""

    def __init__(self, gate: str, summary: str, report: Any = None) -> None:
        self.gate = gate
        self.summary = summary
        self.report = report
        super().__init__(f"gate {gate!r} failed: {summary}")


class ApprovalError(ShiftoverError):
    """An approval that was refused, malformed, or never came."""


class StaleApprovalError(ApprovalError):
    """An answer for a request made at an older state (a rollback or another run came between)."""


class SignatureError(ApprovalError):
    """An answer whose signature is missing or does not prove the approver it names (or a key that
    cannot sign); the run asks again and nothing moves."""

    def __init__(self, approver: str, problem: str) -> None:
        self.approver = approver
        self.problem = problem
        super().__init__(f"unverified answer from {approver or 'an empty approver'}: {problem}")


class RollbackRefusedError(ShiftoverError):
    """A rollback that would lose writes only the new store holds; ``pending`` counts them."""

    def __init__(self, migration: str, pending: int, detail: str) -> None:
        self.migration = migration
        self.pending = pending
        super().__init__(
            f"rollback of {migration!r} refused: {pending} write(s) only the new store holds could not be "
            f"copied to the old store ({detail}); nothing was flipped. Fix the old store and run rollback again"
        )


class CaptureError(ShiftoverError):
    """Trigger-based change capture failed."""


class GatewayError(ShiftoverError):
    """The gateway (HAProxy) would not start or refused a runtime command; ``reply`` is its answer."""

    def __init__(self, command: str, reply: str) -> None:
        self.command = command
        self.reply = reply
        super().__init__(f"gateway refused {command!r}: {reply.strip() or '(no reply)'}")


class GatewayHeldError(GatewayError):
    """A route move refused before it changed anything: another route move holds its gateway."""

    def __init__(self, gateway: str, host: str, holding: Sequence[tuple[str, Any]]) -> None:
        self.gateway = gateway
        self.host = host
        self.holding = tuple(holding)
        names = ", ".join(f"{name!r} (phase {phase})" for name, phase in self.holding)
        self.command = f"claim {gateway}"
        self.reply = (
            f"refused before anything was changed: the gateway in {gateway} on {host} is held by the route move "
            f"{names}; one route move per gateway (its config is rendered from one move's routes: this move "
            "would rewrite it without that move's, sending them back to the old upstream). A move holds its "
            "gateway until it is rolled back (the route-rollback flow), finished too, since the gateway then "
            "serves its routes: move more routes on this gateway by listing them in that move's spec, or run "
            "this move on a gateway of its own"
        )
        ShiftoverError.__init__(self, self.reply)


class UnsupportedEngineError(ShiftoverError):
    """A database Shiftover has no engine module for; ``name`` is SQLAlchemy's name of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Shiftover does not support {name!r} databases (PostgreSQL, MySQL/MariaDB and SQLite)")


def describe_error(exc: BaseException) -> str:
    """An error in one line, as logs and the control store keep it: its type and the first line
    of its message."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"
