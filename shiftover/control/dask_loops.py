"""Worker loops on a ``dask.distributed`` cluster: mode ``dask`` of the backfill and of the
validation diff. Each submits its one worker loop (a picklable callable given its holder id) as a
long-running task to each Dask worker, then watches the control store, not the tasks.

Leases, fenced results and the shared budget are the control store's, as in the other modes: Dask
only places the loops. A Dask worker that dies loses its segment leases, and the loops left take
its segments over once the lease expires. Dask also re-runs a dead worker's task on a live worker
(loose placement); that loop gets a new holder id, so it never writes under the dead loop's fence.
When every loop has ended and work is left, the parent submits another round, up to
``MAX_ROUNDS`` in all.

Why a plain ``distributed.Client`` and not prefect-dask's ``DaskTaskRunner``: the runner is fixed
on a flow when it is declared, while the scheduler comes from the spec at run time; it submits
Prefect task runs with ``pure=True`` and no placement, so two loops may share a Dask worker while
another idles; and each task run reports its state to the Prefect API from the Dask worker, so a
task Dask re-runs after its worker died meets a run already Running. The loops need none of it:
they are plain code (this package never imports Prefect), and the Dask workers need Shiftover and
the databases, not the Prefect API.

A loop's arguments travel through the scheduler: give the control store as a ``${NAME}``
reference (resolved in each Dask worker's environment) to keep its password off the wire.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shiftover.credentials import resolve
from shiftover.errors import SpecError
from shiftover.spec import scheduler_address_problem

MAX_ROUNDS = 3  # loop submissions in all: the first, and two to resume what every loop left
CONNECT_SECONDS = 10.0
WORKERS_SECONDS = 60.0  # how long a run waits for the cluster's first worker

# One worker loop: called on a Dask worker with its holder id, returns its report.
Loop = Callable[[str], dict[str, Any]]


def connect_scheduler(address: str, section: str, *, timeout: float = CONNECT_SECONDS) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (a ``${NAME}`` reference is resolved
    here); a missing package, a malformed address or no answer is a ``SpecError`` naming the field
    of the spec's ``section`` (``backfill.distributed``, ``validation.distributed``)."""
    try:
        from distributed import Client
    except ImportError:
        raise SpecError(
            f"{section}.mode",
            "mode dask needs the distributed package in the run's environment: pip install 'shiftover[dask]'",
        ) from None
    resolved = resolve(address)
    problem = scheduler_address_problem(resolved)
    if problem is not None:
        raise SpecError(f"{section}.scheduler", f"{address}: {problem}")
    try:
        return Client(resolved, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SpecError(
            f"{section}.scheduler",
            f"no Dask scheduler answered at {resolved} within {timeout:g} s ({exc.__class__.__name__})",
        ) from None


@contextmanager
def scheduler_client(client: Any, address: str | None, section: str) -> Iterator[Any]:
    """``client`` when given (left open), else one connected to ``address`` and closed after."""
    if client is not None:
        yield client
        return
    if address is None:
        raise SpecError(f"{section}.scheduler", "mode dask needs the Dask scheduler's address")
    owned = connect_scheduler(address, section)
    try:
        yield owned
    finally:
        owned.close()


def dask_workers(client: Any, section: str, *, timeout: float = WORKERS_SECONDS) -> list[str]:
    """The cluster's worker addresses, sorted; waits up to ``timeout`` for the first one."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise SpecError(
            f"{section}.scheduler",
            f"the Dask scheduler at {client.scheduler.address} has no worker after {timeout:g} s",
        ) from None
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def run_on_dask_worker(loop: Loop, prefix: str) -> dict[str, Any]:
    """The task each Dask worker runs: ``loop`` under a holder id of its own (the Dask worker's name,
    host and pid, and a fresh suffix: a re-run of this task after a worker died must not write under
    the dead loop's fence). Under the 200 characters of ``lease_holder``."""
    from distributed import get_worker

    parts = [prefix, str(get_worker().name)[:60], socket.gethostname()[:64], str(os.getpid()), uuid.uuid4().hex[:6]]
    return loop("-".join(parts))


@dataclass
class LoopsOutcome:
    """What the parent saw: the loops' reports, the loops that failed (their errors), rounds submitted."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unfinished_loops: int = 0  # still running when the parent stopped waiting for them
    rounds: int = 0
    dask_workers: int = 0


OutcomeT = TypeVar("OutcomeT", bound=LoopsOutcome)


@dataclass(frozen=True)
class DaskLoops:
    """``loops`` copies of ``loop`` on the cluster of ``client``; ``kind`` and ``prefix`` name their
    tasks and holder ids, ``section`` the spec section a cluster problem is reported under."""

    client: Any
    loop: Loop
    loops: int
    kind: str
    section: str
    prefix: str = field(default_factory=lambda: f"dask-{uuid.uuid4().hex[:8]}")

    def submit(self, round_: int) -> list[Any]:
        """One round: loop i placed on the cluster's worker i mod n (loosely: Dask may move it to a
        live worker if that one is gone)."""
        addresses = dask_workers(self.client, self.section)
        return [
            self.client.submit(
                run_on_dask_worker,
                self.loop,
                self.prefix,
                key=f"shiftover-{self.kind}-{self.prefix}-r{round_}-{i}",
                workers=[addresses[i % len(addresses)]],
                allow_other_workers=True,
                pure=False,
            )
            for i in range(self.loops)
        ]

    def run(
        self,
        outcome: OutcomeT,
        left: Callable[[], int],
        *,
        tick: Callable[[], None] | None = None,
        every: float = 1.0,
        grace: float = 10.0,
        log: Callable[[str], None] = lambda _: None,
    ) -> OutcomeT:
        """Rounds of loops until ``left()`` (the segments still to do) is 0, or every loop of the
        last round ended with segments left; ``tick`` is called every ``every`` seconds meanwhile."""
        futures = self.submit(1)
        outcome.rounds, outcome.dask_workers = 1, len(dask_workers(self.client, self.section))
        log(f"submitted {len(futures)} {self.kind} loops to {outcome.dask_workers} Dask workers")
        while True:
            if tick is not None:
                tick()
            remaining = left()
            if remaining == 0:
                break
            if all(f.done() for f in futures):  # every loop ended, yet segments are left
                if outcome.rounds >= MAX_ROUNDS:
                    log(f"every Dask loop ended after {outcome.rounds} rounds with segments left; stopping")
                    break
                outcome.rounds += 1
                futures += self.submit(outcome.rounds)
                log(f"round {outcome.rounds}: {remaining} segments left")
            time.sleep(every)
        if tick is not None:
            tick()
        self.collect(futures, outcome, grace)
        return outcome

    def collect(self, futures: list[Any], outcome: LoopsOutcome, grace: float) -> None:
        """Give the loops ``grace`` seconds to end on their own (nothing is left to claim), read their
        reports and errors, and release the rest (a hung loop; Dask cannot stop a running task)."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            time.sleep(0.2)
        for f in futures:
            if f.status == "finished":
                outcome.reports.append(f.result())
            elif f.status == "error":
                outcome.errors.append(f"{f.key}: {f.exception()!r}")
        unfinished = [f for f in futures if not f.done()]
        outcome.unfinished_loops = len(unfinished)
        if unfinished:
            self.client.cancel(unfinished)
