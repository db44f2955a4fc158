"""Mode ``dask`` of a distributed validation diff: the diff's worker loop (``diff_claimed_segments``)
submitted as a long-running task to each worker of a ``dask.distributed`` cluster
(``shiftover.control.dask_loops``: placement, rounds, why not prefect-dask), rounds until no
segment of the run is pending; the parent then builds the report from the control store as in
the other modes.

The loop's arguments travel through the scheduler: give the control store as a ``${NAME}``
reference (resolved in each Dask worker's environment) to keep its password off the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shiftover.control.dask_loops import DaskLoops, LoopsOutcome, connect_scheduler, scheduler_client
from shiftover.diff.distributed import PENDING, DiffJob, DiffRun, diff_claimed_segments, read_segments, recorded_count
from shiftover.errors import DiffError, SpecError
from shiftover.spec import DiffDistributedSpec

SECTION = "validation.distributed"


@dataclass(frozen=True)
class DiffLoop:
    """The diff's loop as a Dask task: opens the migration on the Dask worker, diffs claimed
    segments under the holder id it is given, closes its engines' pools after (a long-lived Dask
    worker keeps no idle connections)."""

    spec: dict[str, Any]
    control_url: str
    job: dict[str, Any]  # DiffJob.as_dict
    ttl: float

    def __call__(self, holder: str) -> dict[str, Any]:
        from shiftover.migration import open_migration
        from shiftover.spec import parse_spec

        migration = open_migration(parse_spec(self.spec), self.control_url, register=False, needed_by="a diff worker")
        try:
            job = DiffJob.from_dict(self.job)
            poll = min(1.0, self.ttl / 4)
            return diff_claimed_segments(migration, job, holder, ttl=self.ttl, poll_seconds=poll).as_dict()
        finally:
            for engine in (migration.source, migration.target, migration.store.engine):
                engine.dispose()


@dataclass
class DaskDiffLoops:
    """A ``WorkerRunner`` of the diff on the spec's Dask cluster. ``control_url``: as the run got it
    (a ``${NAME}`` reference stays one); else the open store's URL, password included, goes through
    the scheduler. ``client``: a connected one (else one is connected and closed after)."""

    control_url: str | None = None
    client: Any = None
    every: float = 1.0
    grace: float = 10.0
    log: Callable[[str], None] = lambda _: None
    outcome: LoopsOutcome | None = None  # the last run's

    def check(self, settings: DiffDistributedSpec) -> None:
        """Refuse a missing package, a bad address or a silent scheduler, naming the field."""
        if self.client is None:
            if settings.scheduler is None:
                raise SpecError(f"{SECTION}.scheduler", "mode dask needs the Dask scheduler's address")
            connect_scheduler(settings.scheduler, SECTION).close()

    def __call__(self, run: DiffRun) -> LoopsOutcome:
        """Rounds of loops until no segment is pending (or the run passed ``max_differences``);
        ``DiffError`` when every round ended with segments pending."""
        migration, settings, job = run.migration, run.settings, run.job
        engine, limit = migration.store.engine, migration.spec.validation.max_differences
        spec = json.loads(migration.spec.model_dump_json(by_alias=True))
        url = self.control_url or engine.url.render_as_string(hide_password=False)
        loop = DiffLoop(spec, url, job.as_dict(), settings.lease_ttl_seconds)

        def left() -> int:
            if recorded_count(engine, migration.name, job.run_id) > limit:
                return 0  # the report says it is truncated
            return sum(1 for r in read_segments(engine, migration.name, job.run_id) if r.state == PENDING)

        with scheduler_client(self.client, settings.scheduler, SECTION) as client:
            loops = DaskLoops(client, loop, settings.workers, "diff", SECTION)
            outcome = loops.run(LoopsOutcome(), left, tick=run.tick, every=self.every, grace=self.grace, log=self.log)
        self.outcome = outcome
        if left():
            last = outcome.errors[-1] if outcome.errors else "no loop failed"
            raise DiffError(
                f"diff run {job.run_id}: segments still pending after {outcome.rounds} rounds of Dask loops ({last})"
            )
        return outcome
