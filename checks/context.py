"""What a gate function receives and returns: ``(GateContext, GateSpec) -> GateResult``.

Kept apart from ``shiftover.checks.gate`` (which runs gates through the registry) so the gate modules
import these types without importing the registry that imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shiftover.diff.distributed import DiffRunProgress, WorkerRunner
from shiftover.diff.report import Key
from shiftover.migration import Migration
from shiftover.spec import GateSpec


@dataclass(frozen=True)
class DiffScope:
    """What the checksum gate compares: everything, rows changed since a time, or given keys."""

    since: datetime | None = None
    since_column: str = "updated_at"
    keys: tuple[Key, ...] | None = None


@dataclass(frozen=True)
class GateContext:
    """Everything a gate is run with: the migration, the stage whose gates run (expectations vary
    by stage), the checksum gate's scope, and who is acting (a repair is audited under that name)."""

    migration: Migration
    stage: str
    scope: DiffScope = DiffScope()
    actor: str = "shiftover"
    # starts and waits for a distributed diff's workers when they are Prefect child runs
    # (``validation.distributed.mode: deployment``); the validate flow sets it
    diff_workers: WorkerRunner | None = None
    # gets a distributed diff's progress about every second (the validate flow's live artifact)
    diff_tick: Callable[[DiffRunProgress], None] | None = None


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    summary: str  # one line a person can act on
    blocking: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)  # evidence: differing keys, failed expectations
    markdown: str = ""  # the longer report, rendered as a Prefect artifact
    metrics: dict[str, Any] = field(default_factory=dict)


GateFn = Callable[[GateContext, GateSpec], GateResult]
